"""Replays in the outbox: the events a replay sends a destination, counting them before it
(a dry run) and queueing them, with the dead letters each queued pair leaves."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.destinations import EVERY_OUTCOME, Destination
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter, event_conditions
from receiver.store.queries import count_events
from receiver.store.tables import deliveries, events


def replay_conditions(which: EventFilter, destination: Destination) -> list[Any]:
    """The events of `which` that `destination` wants (by their type and outcome as stored)."""
    wanted = [*event_conditions(which)]
    if destination.event_types is not None:
        wanted.append(events.c.type.in_(sorted(destination.event_types)))
    if destination.wanted_outcomes != EVERY_OUTCOME:
        wanted.append(events.c.outcome.in_(sorted(destination.wanted_outcomes)))
    return wanted


async def count_replay(
    connection: AsyncConnection, which: EventFilter, destination: Destination, limit: int
) -> int:
    """How many deliveries `replay_events` would queue to `destination`, or `limit` + 1 for
    any number past `limit`. A destination that takes every event is counted as the events
    are (`count_events`, which starts from the fewer side); one with filters, with them."""
    if destination.event_types is None and destination.wanted_outcomes == EVERY_OUTCOME:
        return await count_events(connection, which, limit)
    found = sa.select(events.c.id).where(*replay_conditions(which, destination))
    counted = sa.select(sa.func.count()).select_from(found.limit(limit + 1).subquery())
    return (await connection.execute(counted)).scalar_one()


async def replay_events(
    connection: AsyncConnection,
    which: EventFilter,
    now: datetime,
    destinations: Sequence[Destination],
    target_url: str | None = None,
) -> dict[str, int]:
    """Queue a new delivery of every matching event to each of `destinations` whose filters
    it passes (by its type and outcome as stored), to `target_url` instead of the
    destination's URL if given; how many, by destination. Each queued pair's dead letters
    become `replayed` at once: a retry is in flight, and nobody should replay them twice."""
    queued: dict[str, int] = {}
    for destination in destinations:
        selected = sa.select(
            events.c.id,
            sa.literal(destination.name, sa.Text),
            sa.literal(DeliveryState.PENDING.value),
            sa.literal(target_url, sa.Text),
            sa.literal(now, deliveries.c.next_attempt_at.type),
            sa.literal(now, deliveries.c.created_at.type),
        ).where(*replay_conditions(which, destination))
        # On PostgreSQL, an event a prune has locked is waited for, then skipped if it went:
        # without the lock the new row's foreign key would fail the whole replay.
        selected = selected.with_for_update(read=True, key_share=True, of=events)
        inserted = await connection.scalars(
            sa.insert(deliveries)
            .from_select(
                ["event_id", "destination", "state", "target_url", "next_attempt_at", "created_at"],
                selected,
            )
            .returning(deliveries.c.event_id)
        )
        event_ids = list(inserted)
        for start in range(0, len(event_ids), REPLAYED_CHUNK):
            await connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.event_id.in_(event_ids[start : start + REPLAYED_CHUNK]),
                    deliveries.c.destination == destination.name,
                    deliveries.c.target_url.is_not_distinct_from(sa.literal(target_url, sa.Text)),
                    deliveries.c.state == DeliveryState.DEAD.value,
                )
                .values(state=DeliveryState.REPLAYED.value)
            )
        if event_ids:
            queued[destination.name] = len(event_ids)
    return queued


# Event IDs a statement names when a replay marks dead letters replayed: the actions replay
# 500 events a transaction, and 500 parameters are far inside both backends' limits.
REPLAYED_CHUNK = 500
