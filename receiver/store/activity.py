"""What happened hour by hour: events received and delivery attempts by outcome, over the
last day (the console's charts). Each reads a range of an index on its time column."""

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.tables import attempts, events


def _hour(connection: AsyncConnection, column: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return sa.func.to_char(
            sa.func.date_trunc("hour", sa.func.timezone("UTC", column)), "YYYY-MM-DD HH24"
        )
    # SQLite holds naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff": the hour is its first 13.
    return sa.func.substr(column, 1, 13)


async def hourly_activity(
    connection: AsyncConnection, now: datetime, hours: int = 24
) -> list[dict[str, Any]]:
    """One entry per hour, oldest first: `hour` (its start, UTC), `events` received,
    `delivered` (attempts answered 2xx) and `failed` (every other attempt)."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    event_hour = _hour(connection, events.c.received_at)
    received = await connection.execute(
        sa.select(event_hour, sa.func.count())
        .where(events.c.received_at >= start)
        .group_by(event_hour)
    )
    attempt_hour = _hour(connection, attempts.c.attempted_at)
    succeeded = attempts.c.status_code.between(200, 299)
    tried = await connection.execute(
        sa.select(
            attempt_hour,
            sa.func.count().filter(succeeded),
            sa.func.count().filter(~succeeded | attempts.c.status_code.is_(None)),
        )
        .where(attempts.c.attempted_at >= start)
        .group_by(attempt_hour)
    )
    by_hour = {
        (start + timedelta(hours=n)).strftime("%Y-%m-%d %H"): {
            "hour": start + timedelta(hours=n),
            "events": 0,
            "delivered": 0,
            "failed": 0,
        }
        for n in range(hours)
    }
    for hour, count in received:
        if hour in by_hour:
            by_hour[hour]["events"] = count
    for hour, delivered, failed in tried:
        if hour in by_hour:
            by_hour[hour] |= {"delivered": delivered, "failed": failed}
    return list(by_hour.values())
