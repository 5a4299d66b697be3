"""What each destination looked like when a process last applied the destinations file (the
`applied_destinations` table): written at start-up and by every reload, read by
`receiver destinations reload` to say what a reload would change. Descriptions hold no
secret (a URL without its credentials, a fingerprint of each signing secret).
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.tables import applied_destinations

Description = dict[str, Any]


async def applied_descriptions(connection: AsyncConnection) -> dict[str, Description]:
    """Each destination applied last, by name (a handful of rows: one per destination
    configured)."""
    rows = await connection.execute(
        sa.select(applied_destinations.c.destination, applied_destinations.c.description)
    )
    return {row.destination: dict(row.description) for row in rows}


async def record_applied(
    connection: AsyncConnection, descriptions: Mapping[str, Description], now: datetime
) -> None:
    """Make the table hold `descriptions` and nothing else."""
    await connection.execute(
        sa.delete(applied_destinations).where(
            applied_destinations.c.destination.not_in(list(descriptions))
        )
    )
    if not descriptions:
        return
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = insert(applied_destinations).values(
        [
            {"destination": name, "description": description, "applied_at": now}
            for name, description in descriptions.items()
        ]
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[applied_destinations.c.destination],
            set_={
                "description": statement.excluded.description,
                "applied_at": statement.excluded.applied_at,
            },
        )
    )
