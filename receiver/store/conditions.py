"""Operational conditions in progress (the `conditions` table): raising one, ending it, and
the windows in which a destination's dead letters are gathered.

The database decides which process raises or ends a condition, as it decides which claims
a record (see `store.reconciliation`): the insert that raises it is a no-op where the row
already exists, and the delete that ends it returns the row only once. So replicas that see
the same condition at once raise it once and end it once.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.model import GENERATION_STATUSES, OPERATIONAL_ID_PREFIX, TERMINAL_STATUSES
from receiver.store.deliveries import DeliveryState
from receiver.store.tables import conditions, deliveries, destination_health, events, records


class Condition(NamedTuple):
    name: str
    started_at: datetime
    counted: int
    detail: str | None


async def start_condition(
    connection: AsyncConnection, name: str, now: datetime, detail: str | None = None
) -> bool:
    """Raise `name` as of `now`: whether this transaction raised it (False when it is
    already in progress). On PostgreSQL a concurrent raise waits for this one's commit,
    then finds the row."""
    inserted = await connection.execute(
        _insert(connection)
        .values(name=name, started_at=now, detail=detail)
        .on_conflict_do_nothing(index_elements=[conditions.c.name])
        .returning(conditions.c.name)
    )
    return inserted.first() is not None


async def end_condition(
    connection: AsyncConnection, name: str, started_at: datetime | None = None
) -> Condition | None:
    """End `name` (only the one that started at `started_at`, if given): the row as it
    was, if this transaction ended it; None if it was not in progress (or another process
    ended it first). A window of dead letters is closed with the count taken under the
    row's lock: a dead letter counted meanwhile is in it or in the next, never lost nor
    counted twice."""
    matching = [conditions.c.name == name]
    if started_at is not None:
        matching.append(conditions.c.started_at == started_at)
    ended = await connection.execute(
        sa.delete(conditions).where(*matching).returning(*conditions.c)
    )
    row = ended.first()
    return None if row is None else Condition(*row)


async def conditions_in_progress(connection: AsyncConnection) -> list[Condition]:
    """Every condition in progress (a handful: one per kind and destination at most)."""
    rows = await connection.execute(sa.select(conditions).order_by(conditions.c.name))
    return [Condition(*row) for row in rows]


class DeadLetter(NamedTuple):
    event_id: str
    event_type: str | None
    attempts: int
    last_status_code: int | None
    last_error: str | None


async def first_dead_letters(
    connection: AsyncConnection, destination: str, window: Condition, limit: int
) -> Sequence[DeadLetter]:
    """The first `limit` of `destination`'s deliveries that went dead in `window` and are
    dead letters still, in ID order. From the partial index of dead letters by destination,
    from the window's first dead letter's ID (its `detail`) on: not every dead letter the
    destination has kept. One queued before that one but dead later is counted, not
    named."""
    first_id = int(window.detail) if window.detail else 0
    rows = await connection.execute(
        sa.select(
            deliveries.c.event_id,
            events.c.type,
            deliveries.c.attempts,
            deliveries.c.last_status_code,
            deliveries.c.last_error,
        )
        .select_from(deliveries.join(events, events.c.id == deliveries.c.event_id))
        .where(
            deliveries.c.state == DeliveryState.DEAD.value,
            deliveries.c.destination == destination,
            deliveries.c.id >= first_id,
            deliveries.c.finished_at >= window.started_at,
            # As they are counted (`store.deliveries`): not the service's own events.
            sa.func.substr(deliveries.c.event_id, 1, len(OPERATIONAL_ID_PREFIX))
            != OPERATIONAL_ID_PREFIX,
        )
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    return [DeadLetter(*row) for row in rows]


def _insert(connection: AsyncConnection) -> postgresql.Insert | sqlite.Insert:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(conditions)
    return sqlite.insert(conditions)


class Backlog(NamedTuple):
    pending: int
    oldest: datetime


async def pending_backlogs(connection: AsyncConnection) -> dict[str, Backlog]:
    """Each destination's pending deliveries: how many, and when the oldest was queued."""
    rows = await connection.execute(
        sa.select(deliveries.c.destination, sa.func.count(), sa.func.min(deliveries.c.created_at))
        .where(deliveries.c.state == DeliveryState.PENDING.value)
        .group_by(deliveries.c.destination)
    )
    return {name: Backlog(n, oldest) for name, n, oldest in rows}


class StuckRecords(NamedTuple):
    found: int
    oldest_task_id: str
    oldest_changed_at: datetime


async def stuck_records(
    connection: AsyncConnection, changed_before: datetime, limit: int
) -> StuckRecords | None:
    """Records not terminal and unchanged since before `changed_before`: how many (no
    further than `limit`; `limit` + 1 reads "more than"), and the oldest; None if none.
    From the index of records by status and time changed."""
    running = records.c.status.in_(sorted(GENERATION_STATUSES - TERMINAL_STATUSES))
    stuck = [running, records.c.changed_at < changed_before]
    oldest = (
        await connection.execute(
            sa.select(records.c.task_id, records.c.changed_at)
            .where(*stuck)
            .order_by(records.c.changed_at)
            .limit(1)
        )
    ).first()
    if oldest is None:
        return None
    found = sa.select(records.c.task_id).where(*stuck).limit(limit + 1).subquery()
    n = (await connection.execute(sa.select(sa.func.count()).select_from(found))).scalar_one()
    return StuckRecords(n, oldest.task_id, oldest.changed_at)


async def last_successes(connection: AsyncConnection) -> dict[str, datetime]:
    """When each destination last took an attempt, as every forwarder records it."""
    rows = await connection.execute(
        sa.select(destination_health.c.destination, destination_health.c.last_success_at).where(
            destination_health.c.last_success_at.is_not(None)
        )
    )
    return dict(rows.all())
