"""Whether a destination is disabled (the `disabled_destinations` table): by a `410 Gone`
answer, which the forwarder records in the transaction that writes the attempt, or by an
operator. The state is the database's, so every replica obeys it and it survives
restarts; a forwarder reads it in every claiming transaction (`store.deliveries`).
"""

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.tables import disabled_destinations

# `disabled_by` of a destination the forwarder disabled because it answered 410 Gone.
BY_GONE = "410"
# A reason given by hand is kept, and shown, up to this many characters: a sentence, not a
# document in every listing.
MAX_REASON_CHARS = 500


class Disabled(NamedTuple):
    destination: str
    disabled_at: datetime
    disabled_by: str
    reason: str | None


async def disabled_destinations_in(connection: AsyncConnection) -> dict[str, Disabled]:
    """Every destination disabled, by name (a handful: at most one row per name ever
    configured)."""
    rows = await connection.execute(
        sa.select(disabled_destinations).order_by(disabled_destinations.c.destination)
    )
    return {row.destination: Disabled(*row) for row in rows}


async def disable_destination(
    connection: AsyncConnection, destination: str, by: str, reason: str | None, now: datetime
) -> bool:
    """Disable `destination`: whether this call did (False when it already was, and its
    first reason is kept)."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    inserted = await connection.execute(
        insert(disabled_destinations)
        .values(destination=destination, disabled_at=now, disabled_by=by, reason=reason)
        .on_conflict_do_nothing(index_elements=[disabled_destinations.c.destination])
        .returning(disabled_destinations.c.destination)
    )
    return inserted.first() is not None


async def enable_destination(connection: AsyncConnection, destination: str) -> Disabled | None:
    """Enable `destination`: the state it was in, if this call enabled it; None when it was
    not disabled."""
    ended = await connection.execute(
        sa.delete(disabled_destinations)
        .where(disabled_destinations.c.destination == destination)
        .returning(*disabled_destinations.c)
    )
    row = ended.first()
    return None if row is None else Disabled(*row)
