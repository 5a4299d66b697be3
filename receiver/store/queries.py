"""Reading what was stored, for operators. Rows come back as JSON-ready dicts."""

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.exceptions import NotFoundError
from receiver.store.deliveries import DISABLED, ORPHANED, DeliveryState, shown_state
from receiver.store.destination_states import disabled_destinations_in
from receiver.store.filters import EventFilter, count_matching_events, event_conditions, sides
from receiver.store.pages import Page, decode_cursor, encode_cursor, jsonable, parse_moment
from receiver.store.tables import attempts, deliveries, events, records
from receiver.tracing.carriers import trace_id_of


async def get_event(
    connection: AsyncConnection, event_id: str, configured: Collection[str] | None = None
) -> dict[str, Any]:
    """One event with its deliveries; given the `configured` destinations, a pending
    delivery to another reads orphaned, and one to a disabled destination disabled, as in
    `list_deliveries`."""
    row = (await connection.execute(sa.select(events).where(events.c.id == event_id))).first()
    if row is None:
        raise NotFoundError(f"no event {event_id!r}")
    event = jsonable(row._asdict())
    body = event.pop("body")
    # The trace to open in a tracing backend; the W3C text itself is the forwarder's.
    event.pop("tracestate")
    event["trace_id"] = trace_id_of(event.pop("traceparent"))
    event["payload"] = _payload(body)
    event["deliveries"] = await _deliveries_of(connection, event_id)
    if configured is not None:
        disabled = await disabled_destinations_in(connection)
        for delivery in event["deliveries"]:
            shown = shown_state(delivery["state"], delivery["destination"], configured, disabled)
            delivery["state"] = shown
    return event


async def _deliveries_of(connection: AsyncConnection, event_id: str) -> list[dict[str, Any]]:
    rows = await connection.execute(
        sa.select(*DELIVERY_COLUMNS)
        .where(deliveries.c.event_id == event_id)
        .order_by(deliveries.c.id)
    )
    shown = [jsonable(row._asdict()) for row in rows]
    attempt_rows = await connection.execute(
        sa.select(attempts)
        .where(attempts.c.delivery_id.in_([delivery["id"] for delivery in shown]))
        .order_by(attempts.c.id)
    )
    by_delivery: dict[int, list[dict[str, Any]]] = {delivery["id"]: [] for delivery in shown}
    for attempt in attempt_rows:
        by_delivery[attempt.delivery_id].append(
            jsonable({k: v for k, v in attempt._asdict().items() if k != "delivery_id"})
        )
    for delivery in shown:
        delivery["attempt_log"] = by_delivery[delivery["id"]]
    return shown


EVENT_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.received_at,
    events.c.outcome,
    events.c.quarantine_reason,
    events.c.task_id,
)
DELIVERY_COLUMNS = (
    deliveries.c.id,
    deliveries.c.event_id,
    deliveries.c.destination,
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


async def list_events(
    connection: AsyncConnection, which: EventFilter, limit: int, cursor: str | None = None
) -> Page:
    """Newest first, without bodies; `cursor` continues from the previous page's end."""
    query = (
        sa.select(*EVENT_COLUMNS)
        .where(*event_conditions(which))
        .order_by(events.c.received_at.desc(), events.c.id.desc())
        .limit(limit)
    )
    if cursor is not None:
        received_at, event_id = decode_cursor(cursor, str, str)
        moment = parse_moment(received_at)
        query = query.where(
            sa.tuple_(events.c.received_at, events.c.id)
            < sa.tuple_(sa.literal(moment, events.c.received_at.type), sa.literal(event_id))
        )
    rows = [row._asdict() for row in await connection.execute(query)]
    last = rows[-1] if len(rows) == limit else None
    next_cursor = encode_cursor(last["received_at"].isoformat(), last["id"]) if last else None
    return Page([jsonable(row) for row in rows], next_cursor)


async def count_events(connection: AsyncConnection, which: EventFilter, limit: int) -> int:
    """How many events `which` matches, or `limit` + 1 for any number past `limit`."""
    if connection.dialect.name == "postgresql":
        # PostgreSQL compiles a query whose estimated cost is high (JIT); for this count it
        # costs more than it saves (a day's dead letters of a million events: 237 ms with,
        # 73 ms without, measured). For this transaction only.
        await connection.execute(sa.text("SET LOCAL jit = off"))
    from_events = False
    if (both := sides(which)) is not None:
        kept, in_state = [(await connection.execute(side)).scalar_one() for side in both]
        # Both past the bound: the state's side, whose candidates the others rarely refuse.
        from_events = kept < in_state
    return (await connection.execute(count_matching_events(which, limit, from_events))).scalar_one()


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    state: str | None = None  # a DeliveryState, ORPHANED or DISABLED
    destination: str | None = None


async def list_deliveries(
    connection: AsyncConnection,
    which: DeliveryFilter,
    configured: Sequence[str],
    limit: int,
    cursor: str | None = None,
) -> Page:
    """Newest first; `cursor` continues from the previous page's end. A pending delivery
    of a destination not in `configured` is listed, and selected, as orphaned; one of a
    destination disabled (read in this transaction) as disabled."""
    query = sa.select(*DELIVERY_COLUMNS).order_by(deliveries.c.id.desc()).limit(limit)
    if cursor is not None:
        (before_id,) = decode_cursor(cursor, int)
        query = query.where(deliveries.c.id < int(before_id))
    # A handful of names: the filter's IN lists stay short.
    disabled = await disabled_destinations_in(connection)
    enabled = sorted(name for name in configured if name not in disabled)
    stopped = sorted(name for name in configured if name in disabled)
    conditions = _delivery_conditions(which, enabled, stopped, _as_is)
    # Dead letters come newest first from their own indexes (tables.py), without a sort.
    # PostgreSQL weighs the two ways itself, from its statistics (5 ms, measured); SQLite
    # has none and takes the index.
    sorts = connection.dialect.name == "sqlite" and which.state != DeliveryState.DEAD
    if conditions and sorts:
        found = sa.select(deliveries.c.id).where(*conditions).limit(SORTED_AT_MOST + 1)
        many = sa.select(sa.func.count()).select_from(found.subquery())
        if (await connection.execute(many)).scalar_one() > SORTED_AT_MOST:
            conditions = _delivery_conditions(which, enabled, stopped, _unindexed)
    rows = [jsonable(row._asdict()) for row in await connection.execute(query.where(*conditions))]
    for row in rows:
        row["state"] = shown_state(row["state"], row["destination"], configured, disabled)
    next_cursor = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    return Page(rows, next_cursor)


# On SQLite, a filter that keeps more deliveries than this is listed by walking them newest
# first and skipping the others; fewer are found from an index and sorted. It would otherwise
# sort every match (the 900,000 delivered to one destination of a million: 0.48 s, measured),
# and this many sort in a few ms.
SORTED_AT_MOST = 10_000


def _as_is(column: Any) -> Any:
    return column


def _unindexed(column: Any) -> Any:
    # The same value, as an expression no index holds: the planner walks the primary key.
    return column.op("||")("")


def _delivery_conditions(
    which: DeliveryFilter,
    enabled: list[str],
    disabled: list[str],
    column: Callable[[Any], Any],
) -> list[Any]:
    """`enabled` and `disabled`: the configured names, parted by whether they are."""
    state, destination = column(deliveries.c.state), column(deliveries.c.destination)
    conditions = []
    if which.state == ORPHANED:
        conditions += [
            state == DeliveryState.PENDING.value,
            destination.not_in(sorted(enabled + disabled)),
        ]
    elif which.state == DISABLED:
        conditions += [state == DeliveryState.PENDING.value, destination.in_(disabled)]
    elif which.state == DeliveryState.PENDING:
        conditions += [state == which.state, destination.in_(enabled)]
    elif which.state is not None:
        conditions.append(state == which.state)
    if which.destination is not None:
        conditions.append(destination == which.destination)
    return conditions


async def record_history(connection: AsyncConnection, task_id: str) -> list[dict[str, Any]]:
    """The events that touched a record, oldest first, each with its deliveries."""
    rows = await connection.execute(
        sa.select(*EVENT_COLUMNS)
        .where(events.c.task_id == task_id)
        .order_by(events.c.received_at, events.c.id)
    )
    history = [jsonable(row._asdict()) for row in rows]
    for event in history:
        event["deliveries"] = await _deliveries_of(connection, event["id"])
    return history


async def get_record(connection: AsyncConnection, task_id: str) -> dict[str, Any]:
    row = (await connection.execute(sa.select(records).where(records.c.task_id == task_id))).first()
    if row is None:
        raise NotFoundError(f"no record {task_id!r}")
    return jsonable(row._asdict())


def _payload(body: bytes) -> Any:
    # Quarantined bodies may not be JSON at all; operators still see that one was stored.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
