"""Retention: old events whose forwarding is finished go, with their deliveries and
attempts. Records stay; their `last_event_id` may then name a pruned event.

Pruning runs in chunks, one transaction each, so that the ingest writer never waits on
one long delete for more than a moment.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.store.database import transaction
from receiver.store.deliveries import DeliveryState
from receiver.store.tables import attempts, deliveries, events

CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int = 0
    deliveries: int = 0
    attempts: int = 0


def _prunable(older_than: datetime) -> sa.Select[tuple[str]]:
    unfinished = sa.exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.state == DeliveryState.PENDING
    )
    return sa.select(events.c.id).where(events.c.received_at < older_than, ~unfinished)


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


async def prune(engine: AsyncEngine, older_than: datetime) -> Pruned:
    total = Pruned()
    while True:
        async with transaction(engine) as connection:
            ids = list(await connection.scalars(_prunable(older_than).limit(CHUNK)))
            if not ids:
                return total
            delivery_ids = sa.select(deliveries.c.id).where(deliveries.c.event_id.in_(ids))
            removed_attempts = await connection.execute(
                sa.delete(attempts).where(attempts.c.delivery_id.in_(delivery_ids))
            )
            removed_deliveries = await connection.execute(
                sa.delete(deliveries).where(deliveries.c.event_id.in_(ids))
            )
            removed_events = await connection.execute(sa.delete(events).where(events.c.id.in_(ids)))
        total = Pruned(
            events=total.events + removed_events.rowcount,
            deliveries=total.deliveries + removed_deliveries.rowcount,
            attempts=total.attempts + removed_attempts.rowcount,
        )


async def _count(connection: AsyncConnection, query: sa.Select[Any]) -> int:
    return int(
        await connection.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    )
