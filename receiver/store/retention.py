"""Retention: old events whose forwarding is finished go, with their deliveries and
attempts. Records stay; their `last_event_id` may then name a pruned event.

Pruning runs in chunks, one transaction each, with a pause between them, so that the
ingest writer never waits on pruning for more than a moment, however much there is.

An event is prunable while none of its deliveries is pending, and each chunk checks that
when it deletes, not only when it chooses: a replay committed in between has queued a
delivery that must be kept. On SQLite a chunk takes the write lock before it chooses
(BEGIN IMMEDIATE), so nothing commits in between. On PostgreSQL it locks the events it
chose (FOR UPDATE), which holds off any new delivery of them, then checks them again in a
statement of its own, which sees whatever committed before the lock. SKIP LOCKED lets
replicas pruning at the same time take different chunks rather than repeat each other's.

A pending delivery to a destination no longer configured (orphaned) would keep its event
for ever; scheduled retention dead-letters those older than the retention, with the reason
`orphaned`, and their events become prunable.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.store.database import transaction
from receiver.store.deliveries import ORPHANED, DeliveryState
from receiver.store.statements import superseded
from receiver.store.tables import attempts, deliveries, events

# Events (or orphaned deliveries) per transaction. A chunk of 500 events with a delivery
# and an attempt each takes tens of milliseconds on SQLite, all of it holding the write lock
# that ingest needs; far bigger chunks would hold it long enough to be seen in ingest's
# latency, far smaller ones would spend most of a prune on transactions.
CHUNK = 500
# Between chunks: the other writers' turn. SQLite's busy handler sleeps up to 100 ms between
# its tries for the lock, so a shorter pause could be missed by a writer waiting for it.
CHUNK_PAUSE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int = 0
    deliveries: int = 0
    attempts: int = 0

    def __add__(self, other: "Pruned") -> "Pruned":
        return Pruned(
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.attempts + other.attempts,
        )


def _pending_delivery() -> sa.Exists:
    return sa.exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.state == DeliveryState.PENDING
    )


def _prunable(older_than: datetime) -> sa.Select[tuple[str]]:
    return sa.select(events.c.id).where(events.c.received_at < older_than, ~_pending_delivery())


@asynccontextmanager
async def _writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that holds SQLite's write lock from its first statement: the driver
    would otherwise begin only at the first write, after the reads that chose the rows."""
    async with transaction(engine) as connection:
        if connection.dialect.name == "sqlite":
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection


async def count_prunable(engine: AsyncEngine, older_than: datetime) -> Pruned:
    ids = _prunable(older_than).subquery()
    delivery_ids = sa.select(deliveries.c.id).where(deliveries.c.event_id.in_(sa.select(ids)))
    async with transaction(engine) as connection:
        return Pruned(
            events=await _count(connection, sa.select(ids)),
            deliveries=await _count(connection, delivery_ids),
            attempts=await _count(
                connection, sa.select(attempts.c.id).where(attempts.c.delivery_id.in_(delivery_ids))
            ),
        )


async def prune(
    engine: AsyncEngine,
    older_than: datetime,
    pause_seconds: float = CHUNK_PAUSE_SECONDS,
    on_chunk: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Remove the events received before `older_than` that have no pending delivery, with
    their deliveries and attempts, a chunk at a time; what went. `on_chunk` is told what
    each chunk removed once it committed, so that a caller can account for the chunks done
    when a later one fails."""
    return await _chunk_by_chunk(
        engine,
        lambda connection: prune_chunk(connection, older_than),
        Pruned(),
        pause_seconds,
        on_chunk,
    )


async def prune_chunk(connection: AsyncConnection, older_than: datetime) -> tuple[int, Pruned]:
    """In the caller's transaction (see `_writing`): choose up to CHUNK prunable events,
    keep those that are no longer prunable by now, and remove the rest; how many were
    chosen, and what went."""
    chosen = list(
        await connection.scalars(
            _prunable(older_than).limit(CHUNK).with_for_update(of=events, skip_locked=True)
        )
    )
    if not chosen:
        return 0, Pruned()
    # Checked again (see the module's doc): on PostgreSQL a new statement sees what committed
    # before the lock was taken.
    ids = list(
        await connection.scalars(
            sa.select(events.c.id).where(events.c.id.in_(chosen), ~_pending_delivery())
        )
    )
    delivery_ids = sa.select(deliveries.c.id).where(deliveries.c.event_id.in_(ids))
    removed_attempts = await connection.execute(
        sa.delete(attempts).where(attempts.c.delivery_id.in_(delivery_ids))
    )
    removed_deliveries = await connection.execute(
        sa.delete(deliveries).where(deliveries.c.event_id.in_(ids))
    )
    removed_events = await connection.execute(sa.delete(events).where(events.c.id.in_(ids)))
    return len(chosen), Pruned(
        events=removed_events.rowcount,
        deliveries=removed_deliveries.rowcount,
        attempts=removed_attempts.rowcount,
    )


async def dead_letter_orphans(
    engine: AsyncEngine,
    older_than: datetime,
    configured: Collection[str],
    now: datetime,
    pause_seconds: float = CHUNK_PAUSE_SECONDS,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Make dead, with the reason `orphaned`, every pending delivery created before
    `older_than` to a destination not in `configured` and leased to no one; how many
    (`on_chunk`: as `prune`'s). Settled as the forwarder settles a delivery that goes dead:
    one with a newer delivery of its pair is `replayed`, and so are its pair's older dead
    letters, so that a pair keeps at most one dead letter."""
    unleased = deliveries.c.lease_expires_at.is_(None) | (deliveries.c.lease_expires_at < now)
    chosen = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.state == DeliveryState.PENDING,
            deliveries.c.destination.not_in(sorted(configured)),
            deliveries.c.created_at < older_than,
            unleased,
        )
        .limit(CHUNK)
        .with_for_update(skip_locked=True)
    )
    orphaned = (
        sa.update(deliveries)
        .where(deliveries.c.id.in_(chosen.scalar_subquery()))
        .values(
            state=DeliveryState.DEAD,
            finished_at=now,
            last_error=ORPHANED,
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(deliveries.c.event_id)
    )

    async def dead_letter_chunk(connection: AsyncConnection) -> tuple[int, int]:
        event_ids = list(await connection.scalars(orphaned))
        if event_ids:
            await connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.event_id.in_(sorted(set(event_ids))),
                    deliveries.c.state == DeliveryState.DEAD,
                    superseded(),
                )
                .values(state=DeliveryState.REPLAYED)
            )
        return len(event_ids), len(event_ids)

    return await _chunk_by_chunk(engine, dead_letter_chunk, 0, pause_seconds, on_chunk)


Done = TypeVar("Done", int, Pruned)


async def _chunk_by_chunk(
    engine: AsyncEngine,
    chunk: Callable[[AsyncConnection], Awaitable[tuple[int, Done]]],
    total: Done,
    pause_seconds: float,
    on_chunk: Callable[[Done], None] | None,
) -> Done:
    """`chunk` in a transaction of its own (see `_writing`), again after a pause for as long
    as it took a whole CHUNK; what the chunks did, summed on `total`."""
    while True:
        async with _writing(engine) as connection:
            taken, done = await chunk(connection)
        if on_chunk is not None:
            on_chunk(done)
        total += done
        if taken < CHUNK:
            return total
        await asyncio.sleep(pause_seconds)


async def _count(connection: AsyncConnection, query: sa.Select[Any]) -> int:
    return int(
        await connection.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    )
