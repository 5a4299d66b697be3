"""Replays in the outbox: the events a replay sends a destination, counting them before it
(a dry run) and queueing them, with the dead letters each queued pair leaves; and dead
letters, replayed by claiming them.

A replay of dead letters claims each one (dead -> replayed) in the statement that finds it,
and queues a delivery only for those it claimed, each to its own target URL. Two replays at
once (two processes, a double-click, a stale tab) queue each dead letter once: on SQLite
the claims are serialised by the write lock, and on PostgreSQL the second waits for the
first's row locks and then finds the rows no longer dead.
"""

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.destinations import EVERY_OUTCOME, Destination
from receiver.model import OPERATIONAL_PREFIX, OPERATIONAL_TYPES, is_operational
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter, event_conditions, pinned
from receiver.store.queries import count_events
from receiver.store.statements import superseded
from receiver.store.tables import deliveries, events


def replay_conditions(which: EventFilter, destination: Destination, filtered: bool) -> list[Any]:
    """The events of `which` a replay sends `destination`: those it wants, as
    `Destination.wants` decides, if `filtered`. Unfiltered (a destination named, whatever
    its filters), every one, but the service's own events only where they were asked for by
    ID or type, or the destination names them: never to one that did not subscribe. By a
    delivery state, every one in that state there: it was sent them before."""
    chosen = [*event_conditions(which)]
    if filtered:
        chosen.append(_wanted_by(destination))
    elif not (which.event_ids or is_operational(which.type) or which.delivery_state):
        chosen.append(sa.or_(_rivyas(), _ours(destination)))
    return chosen


def _wanted_by(destination: Destination) -> Any:
    """`Destination.wants` in SQL."""
    types = destination.event_types
    rivyas = [_rivyas()]
    if types is not None:
        rivyas = [events.c.type.in_(sorted(t for t in types if not is_operational(t)))]
    if destination.wanted_outcomes != EVERY_OUTCOME:
        rivyas.append(events.c.outcome.in_(sorted(destination.wanted_outcomes)))
    return sa.or_(sa.and_(*rivyas), _ours(destination))


def _rivyas() -> Any:
    """Events not the service's own. By `substr`, not LIKE: SQLite's LIKE ignores case, and
    `Receiver.x` is not ours (`is_operational`)."""
    prefix = sa.func.substr(events.c.type, 1, len(OPERATIONAL_PREFIX))
    return sa.or_(events.c.type.is_(None), prefix != OPERATIONAL_PREFIX)


def _ours(destination: Destination) -> Any:
    """The service's own events `destination` names (all of them, with the wildcard)."""
    types = destination.event_types or frozenset()
    if OPERATIONAL_TYPES in types:
        return sa.not_(_rivyas())
    return events.c.type.in_(sorted(t for t in types if is_operational(t)))


def events_to_replay(
    which: EventFilter, destination: Destination, filtered: bool
) -> sa.Select[tuple[str]]:
    """The IDs of the events `replay_events` would send `destination`, oldest first."""
    chosen = replay_conditions(which, destination, filtered)
    return sa.select(events.c.id).where(*chosen).order_by(events.c.received_at)


async def count_replay(
    connection: AsyncConnection,
    which: EventFilter,
    destination: Destination,
    filtered: bool,
    limit: int,
) -> int:
    """How many deliveries `replay_events` would queue to `destination`, or `limit` + 1 for
    any number past `limit`. When nothing but `which` chooses them, they are counted as
    `count_events` counts (it starts from the fewer side)."""
    chosen = replay_conditions(which, destination, filtered)
    if len(chosen) == len(event_conditions(which)):
        return await count_events(connection, which, limit)
    found = sa.select(events.c.id).where(*chosen)
    counted = sa.select(sa.func.count()).select_from(found.limit(limit + 1).subquery())
    return (await connection.execute(counted)).scalar_one()


async def replay_events(
    connection: AsyncConnection,
    which: EventFilter,
    now: datetime,
    destinations: Sequence[Destination],
    target_url: str | None = None,
    traceparent: str | None = None,
    filtered: bool = True,
) -> dict[str, int]:
    """Queue a new delivery of every matching event to each of `destinations` whose filters
    it passes (by its type and outcome as stored; every one unless `filtered`), to
    `target_url` instead of the destination's URL if given, their attempts starting from
    `traceparent` (the replay's trace); how many, by destination. Each queued pair's dead
    letters become `replayed` at once: a retry is in flight, and nobody should replay them
    twice."""
    queued: dict[str, int] = {}
    for destination in destinations:
        selected = sa.select(
            events.c.id,
            sa.literal(destination.name, sa.Text),
            sa.literal(DeliveryState.PENDING.value),
            sa.literal(target_url, sa.Text),
            sa.literal(now, deliveries.c.next_attempt_at.type),
            sa.literal(now, deliveries.c.created_at.type),
            sa.literal(traceparent, sa.Text),
        ).where(*replay_conditions(which, destination, filtered))
        # On PostgreSQL, an event a prune has locked is waited for, then skipped if it went:
        # without the lock the new row's foreign key would fail the whole replay.
        selected = selected.with_for_update(read=True, key_share=True, of=events)
        if connection.dialect.name == "postgresql":
            await _lock_pending(connection, which, destination, target_url, filtered)
        inserted = await connection.scalars(
            sa.insert(deliveries)
            .from_select(
                [
                    "event_id",
                    "destination",
                    "state",
                    "target_url",
                    "next_attempt_at",
                    "created_at",
                    "traceparent",
                ],
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


async def _lock_pending(
    connection: AsyncConnection,
    which: EventFilter,
    destination: Destination,
    target_url: str | None,
    filtered: bool,
) -> None:
    """Lock the pending deliveries of the pairs a replay is about to queue again. Under READ
    COMMITTED a forwarder recording one of them dead in another transaction and this replay
    would not see each other: the dead letter would stay `dead` beside the newer delivery.
    With the lock the replay waits for that outcome, and its `dead -> replayed` then sees
    it; in the other order the forwarder waits for the replay, and its settling sees the
    newer delivery."""
    await connection.execute(
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.event_id.in_(
                events_to_replay(which, destination, filtered).order_by(None)
            ),
            deliveries.c.destination == destination.name,
            deliveries.c.target_url.is_not_distinct_from(sa.literal(target_url, sa.Text)),
            deliveries.c.state == DeliveryState.PENDING.value,
        )
        # FOR NO KEY UPDATE, what the forwarder's write of an outcome takes: the weakest
        # that makes either wait for the other (the forwarder's FOR KEY SHARE does not).
        # In ID order, as an index scan of a forwarder's batch by ID takes them, so that
        # the two do not each hold a row the other waits for.
        .order_by(deliveries.c.id)
        .with_for_update(key_share=True, of=deliveries)
    )


# Event IDs a statement names when a replay marks dead letters replayed: the actions replay
# 500 events a transaction, and 500 parameters are far inside both backends' limits.
REPLAYED_CHUNK = 500


def dead_letters(which: EventFilter, destination: str) -> sa.Select[tuple[int]]:
    """The IDs of `destination`'s dead letters (`pinned` to a count) whose events the rest
    of `which` matches, oldest first. From the partial index of dead letters by destination
    (0009); the events are joined only when `which` asks anything of them."""
    conditions = [
        deliveries.c.state == DeliveryState.DEAD.value,
        deliveries.c.destination == destination,
        *pinned(which),
    ]
    others = event_conditions(
        replace(which, delivery_state=None, destination=None, up_to=None, dead_by=None)
    )
    found = sa.select(deliveries.c.id).where(*conditions)
    if others:
        joined = deliveries.join(events, events.c.id == deliveries.c.event_id)
        found = found.select_from(joined).where(*others)
    return found.order_by(deliveries.c.id)


async def count_dead_letters(
    connection: AsyncConnection, which: EventFilter, destination: str, limit: int
) -> tuple[int, int | None]:
    """How many dead letters of `destination` `which` matches (`limit` + 1 for any number
    past `limit`), and the largest ID among them, however many: a confirmation replays up
    to it alone. Both walk the partial index of dead letters, the largest from its end."""
    found = dead_letters(which, destination)
    at_most = found.order_by(None).limit(limit + 1).subquery()
    n = (await connection.execute(sa.select(sa.func.count()).select_from(at_most))).scalar_one()
    newest = found.order_by(None).order_by(deliveries.c.id.desc()).limit(1)
    return n, await connection.scalar(newest)


async def claim_dead_letters(
    connection: AsyncConnection,
    delivery_ids: Sequence[int],
    destination: str,
    now: datetime,
    traceparent: str | None = None,
) -> int:
    """Replay those of `delivery_ids` that are still dead letters of `destination`: each is
    claimed (made `replayed`) and a new delivery of its event queued to its own target URL,
    its attempts starting from `traceparent` (the replay's trace).
    How many: a dead letter another replay claimed first is not queued again."""
    if connection.dialect.name == "postgresql":
        # The events first (as `replay_events` does): a prune that has locked one is waited
        # for, and its dead letters are then gone; a prune that comes after skips them.
        of_claimed = sa.select(deliveries.c.event_id).where(deliveries.c.id.in_(delivery_ids))
        await connection.execute(
            sa.select(events.c.id)
            .where(events.c.id.in_(of_claimed))
            .with_for_update(read=True, key_share=True)
        )
    still_dead = [
        deliveries.c.id.in_(delivery_ids),
        deliveries.c.state == DeliveryState.DEAD.value,
        deliveries.c.destination == destination,
    ]
    # A safety net: a dead letter with a newer delivery of its pair is already being
    # retried (or was): it is settled as `replayed` and nothing is queued for it.
    await connection.execute(
        sa.update(deliveries)
        .where(*still_dead, superseded())
        .values(state=DeliveryState.REPLAYED.value)
    )
    claimed = await connection.execute(
        sa.update(deliveries)
        .where(*still_dead)
        .values(state=DeliveryState.REPLAYED.value)
        .returning(deliveries.c.event_id, deliveries.c.target_url)
    )
    queued = [
        {
            "event_id": event_id,
            "destination": destination,
            "state": DeliveryState.PENDING.value,
            "target_url": target_url,
            "next_attempt_at": now,
            "created_at": now,
            "traceparent": traceparent,
        }
        for event_id, target_url in claimed
    ]
    if queued:
        await connection.execute(sa.insert(deliveries), queued)
    return len(queued)
