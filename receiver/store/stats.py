"""The numbers operators ask for: what arrived, what was forwarded, what it cost."""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.deliveries import DeliveryState
from receiver.store.tables import deliveries, events, records


async def collect_stats(connection: AsyncConnection, since: datetime | None) -> dict[str, Any]:
    """Events and deliveries since `since` (by when they arrived or were queued), records
    by when they last changed; the oldest pending delivery regardless of `since`. Missing
    values sort first on every backend (SQLite and PostgreSQL differ by default)."""
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
    totals = await collect_totals(connection, since)
    return {
        "since": since.isoformat() if since else None,
        "events": [{"type": t, "outcome": o, "count": n} for t, o, n in event_rows],
        "deliveries": totals["deliveries"],
        "records": totals["records"],
        "credits": totals["credits"],
        "failure_codes": [{"code": code, "count": n} for code, n in failure_rows],
        "oldest_pending_delivery": totals["oldest_pending_delivery"],
    }


async def collect_totals(
    connection: AsyncConnection, since: datetime | None = None
) -> dict[str, Any]:
    """Deliveries by state, records by status, credits by model, and the oldest pending
    delivery: what /metrics reports, without the scans of events it does not need."""
    delivery_rows = await connection.execute(
        sa.select(deliveries.c.state, sa.func.count())
        .where(*_after(deliveries.c.created_at, since))
        .group_by(deliveries.c.state)
    )
    record_rows = await connection.execute(
        sa.select(records.c.status, sa.func.count())
        .where(*_after(records.c.changed_at, since))
        .group_by(records.c.status)
    )
    credit_rows = await connection.execute(
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
    oldest_pending = await connection.scalar(
        sa.select(sa.func.min(deliveries.c.created_at)).where(
            deliveries.c.state == DeliveryState.PENDING
        )
    )
    return {
        "deliveries": dict(delivery_rows.all()),
        "records": dict(record_rows.all()),
        "credits": [
            {"model": model, "records": n, "reserved": int(reserved), "final": int(final)}
            for model, n, reserved, final in credit_rows
        ],
        "oldest_pending_delivery": _oldest(oldest_pending),
    }


def _after(column: Any, since: datetime | None) -> list[Any]:
    return [column >= since] if since is not None else []


def _oldest(created_at: datetime | str | None) -> dict[str, Any] | None:
    if created_at is None:
        return None
    # An aggregate skips the column's type: SQLite hands back its stored text.
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    created_at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
    age = (datetime.now(UTC) - created_at).total_seconds()
    return {"created_at": created_at.isoformat(), "age_seconds": round(age, 1)}
