"""Reading what was stored, for operators. Rows come back as JSON-ready dicts."""

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.exceptions import NotFoundError
from receiver.store.deliveries import DeliveryState
from receiver.store.tables import attempts, deliveries, events, records


async def get_event(connection: AsyncConnection, event_id: str) -> dict[str, Any]:
    row = (await connection.execute(sa.select(events).where(events.c.id == event_id))).first()
    if row is None:
        raise NotFoundError(f"no event {event_id!r}")
    event = _jsonable(row._asdict())
    body = event.pop("body")
    event["payload"] = _payload(body)
    event["deliveries"] = await _deliveries_of(connection, event_id)
    return event


async def _deliveries_of(connection: AsyncConnection, event_id: str) -> list[dict[str, Any]]:
    rows = await connection.execute(
        sa.select(*DELIVERY_COLUMNS)
        .where(deliveries.c.event_id == event_id)
        .order_by(deliveries.c.id)
    )
    shown = [_jsonable(row._asdict()) for row in rows]
    attempt_rows = await connection.execute(
        sa.select(attempts)
        .where(attempts.c.delivery_id.in_([delivery["id"] for delivery in shown]))
        .order_by(attempts.c.id)
    )
    by_delivery: dict[int, list[dict[str, Any]]] = {delivery["id"]: [] for delivery in shown}
    for attempt in attempt_rows:
        by_delivery[attempt.delivery_id].append(
            _jsonable({k: v for k, v in attempt._asdict().items() if k != "delivery_id"})
        )
    for delivery in shown:
        delivery["attempt_log"] = by_delivery[delivery["id"]]
    return shown


DELIVERY_COLUMNS = (
    deliveries.c.id,
    deliveries.c.event_id,
    deliveries.c.state,
    # Whether a replay sent it elsewhere; the URL itself may hold credentials.
    deliveries.c.target_url.is_not(None).label("redirected"),
    deliveries.c.attempts,
    deliveries.c.last_status_code,
    deliveries.c.last_error,
    deliveries.c.next_attempt_at,
    deliveries.c.created_at,
    deliveries.c.finished_at,
)


async def list_deliveries(
    connection: AsyncConnection,
    state: DeliveryState | None,
    limit: int,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `before_id` continues a listing from its last row."""
    query = sa.select(*DELIVERY_COLUMNS).order_by(deliveries.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(deliveries.c.state == state)
    if before_id is not None:
        query = query.where(deliveries.c.id < before_id)
    return [_jsonable(row._asdict()) for row in await connection.execute(query)]


async def get_record(connection: AsyncConnection, task_id: str) -> dict[str, Any]:
    row = (await connection.execute(sa.select(records).where(records.c.task_id == task_id))).first()
    if row is None:
        raise NotFoundError(f"no record {task_id!r}")
    return _jsonable(row._asdict())


def _payload(body: bytes) -> Any:
    # Quarantined bodies may not be JSON at all; operators still see that one was stored.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    # Column names arrive as SQLAlchemy's str subclass, which orjson refuses as keys.
    return {
        str(key): value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }
