"""The numbers operators ask for: what arrived, what was forwarded, what it cost."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.destinations import Destination
from receiver.store.health import COUNTED, collect_health
from receiver.store.reconciliation import read_credits
from receiver.store.records import count_stale
from receiver.store.tables import events, records


async def collect_stats(
    connection: AsyncConnection,
    configured: Sequence[Destination],
    since: datetime | None,
    stale_after: timedelta,
) -> dict[str, Any]:
    """Events and deliveries since `since` (by when they arrived or were queued), records
    by when they last changed; the oldest pending delivery regardless of `since`. Missing
    values sort first on every backend (SQLite and PostgreSQL differ by default).
    `configured`: the destinations, for telling pending from orphaned; `stale_after`: how
    long a record not terminal may go unchanged before it counts as stale."""
    event_rows = await connection.execute(
        sa.select(events.c.type, events.c.outcome, sa.func.count())
        .where(*_after(events.c.received_at, since))
        .group_by(events.c.type, events.c.outcome)
        .order_by(events.c.type.nulls_first(), events.c.outcome)
    )
    failure_rows = await connection.execute(
        sa.select(records.c.error_code, sa.func.count())
        .where(records.c.status == "failed", *_after(records.c.changed_at, since))
        .group_by(records.c.error_code)
        .order_by(sa.func.count().desc(), records.c.error_code.nulls_first())
    )
    totals = await collect_totals(connection, configured, stale_after, since)
    return {
        "since": since.isoformat() if since else None,
        "events": [{"type": t, "outcome": o, "count": n} for t, o, n in event_rows],
        "deliveries": totals["deliveries"],
        "destinations": totals["destinations"],
        "records": totals["records"],
        "credits": totals["credits"],
        "failure_codes": [{"code": code, "count": n} for code, n in failure_rows],
        "oldest_pending_delivery": totals["oldest_pending_delivery"],
        "records_stale": totals["records_stale"],
        "rivya_credits": totals["rivya_credits"],
    }


async def collect_totals(
    connection: AsyncConnection,
    configured: Sequence[Destination],
    stale_after: timedelta,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Deliveries by state (in all and by destination), records by status, credits by model,
    and the oldest pending delivery: what /metrics reports, without the scans of events it
    does not need. Without `since` it reads every delivery and record (a million of each:
    0.35 s, measured), so the service computes it off the request (metrics.py)."""
    destinations = await collect_health(connection, configured, since)
    record_rows = await connection.execute(
        sa.select(records.c.status, sa.func.count())
        .where(*_after(records.c.changed_at, since))
        .group_by(records.c.status)
    )
    oldest = [entry["oldest_pending"] for entry in destinations if entry["oldest_pending"]]
    return {
        "deliveries": {
            state: total
            for state in COUNTED
            if (total := sum(entry[state] for entry in destinations))
        },
        "destinations": destinations,
        "records": dict(record_rows.all()),
        "credits": await credits_by_model(connection, since),
        "oldest_pending_delivery": min(oldest, key=lambda o: o["created_at"], default=None),
        # Regardless of `since`: what is stuck now, and the last balance Rivya gave.
        "records_stale": await count_stale(connection, stale_after, datetime.now(UTC)),
        "rivya_credits": await read_credits(connection),
    }


async def credits_by_model(
    connection: AsyncConnection, since: datetime | None
) -> list[dict[str, Any]]:
    """Records and credits by model, of the records changed since `since`."""
    rows = await connection.execute(
        sa.select(
            records.c.model,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(records.c.reserved_credits), 0),
            sa.func.coalesce(sa.func.sum(records.c.final_credits), 0),
        )
        .where(*_after(records.c.changed_at, since))
        .group_by(records.c.model)
        .order_by(records.c.model.nulls_first())
    )
    return [
        {"model": model, "records": n, "reserved": int(reserved), "final": int(final)}
        for model, n, reserved, final in rows
    ]


def _after(column: Any, since: datetime | None) -> list[Any]:
    return [column >= since] if since is not None else []
