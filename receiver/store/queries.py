"""Reading what was stored, for operators. Rows come back as JSON-ready dicts."""

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.exceptions import NotFoundError
from receiver.store.tables import deliveries, events, records


async def get_event(connection: AsyncConnection, event_id: str) -> dict[str, Any]:
    row = (await connection.execute(sa.select(events).where(events.c.id == event_id))).first()
    if row is None:
        raise NotFoundError(f"no event {event_id!r}")
    event = _jsonable(row._asdict())
    body = event.pop("body")
    event["payload"] = _payload(body)
    delivery_rows = await connection.execute(
        sa.select(deliveries).where(deliveries.c.event_id == event_id).order_by(deliveries.c.id)
    )
    event["deliveries"] = [_jsonable(delivery._asdict()) for delivery in delivery_rows]
    return event


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
