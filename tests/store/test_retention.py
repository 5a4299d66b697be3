"""Retention's store functions on a real database of each backend, with the interleavings
that matter driven by the test: a replay committed while a prune runs, two pruners at once,
orphaned deliveries."""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import create_engine
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.replays import replay_events
from receiver.store.retention import CHUNK, Pruned, dead_letter_orphans, prune, prune_chunk
from receiver.store.tables import attempts, deliveries, events
from tests.helpers import destination

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
CUTOFF = NOW - timedelta(days=30)
# Long enough for a replay that is not held off to commit (milliseconds), in the window
# between a prune's choice and its deletes.
WINDOW_SECONDS = 2.0


async def add_events(
    engine: AsyncEngine,
    count: int,
    prefix: str = "evt",
    received_at: datetime = OLD,
    state: DeliveryState = DeliveryState.DELIVERED,
    to: str = "default",
) -> list[str]:
    """`count` events, each with one delivery in `state` to `to` and one attempt."""
    ids = [f"{prefix}_{n}" for n in range(count)]
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events),
            [
                {
                    "id": event_id,
                    "webhook_id": event_id,
                    "received_at": received_at,
                    "outcome": "applied",
                    "body": b"{}",
                }
                for event_id in ids
            ],
        )
        await connection.execute(
            sa.insert(deliveries),
            [
                {
                    "event_id": event_id,
                    "destination": to,
                    "state": state,
                    "next_attempt_at": received_at,
                    "created_at": received_at,
                }
                for event_id in ids
            ],
        )
        await connection.execute(
            sa.insert(attempts).from_select(
                ["delivery_id", "attempted_at", "duration_ms"],
                sa.select(deliveries.c.id, deliveries.c.created_at, sa.literal(1.0)).where(
                    deliveries.c.event_id.in_(ids)
                ),
            )
        )
    return ids


async def rows(engine: AsyncEngine, query: sa.Select[Any]) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def prune_beside(
    engine: AsyncEngine, action: Callable[[AsyncEngine], Awaitable[Any]]
) -> tuple[Pruned, dict[str, Any]]:
    """Prune, running `action` (in a thread, on an engine of its own) between the first
    chunk's choice and its deletes, for up to WINDOW_SECONDS before the deletes go on; what
    went, and what `action` `returned` or the `error` it raised."""
    url = engine.url.render_as_string(hide_password=False)
    outcome: dict[str, Any] = {}

    def act() -> None:
        async def run() -> None:
            own = create_engine(url, 10)
            try:
                outcome["returned"] = await action(own)
            except Exception as exc:  # noqa: BLE001 - what it was is the caller's finding
                outcome["error"] = exc
            finally:
                await own.dispose()

        asyncio.run(run())

    acting = threading.Thread(target=act)

    def between_choice_and_deletes(*args: Any) -> None:
        statement: str = args[2]
        if statement.lstrip().upper().startswith("DELETE") and acting.ident is None:
            acting.start()
            acting.join(WINDOW_SECONDS)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", between_choice_and_deletes)
    try:
        pruned = await prune(engine, CUTOFF)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", between_choice_and_deletes)
    acting.join()
    return pruned, outcome


async def test_a_replay_tried_while_prune_runs_is_never_deleted(engine: AsyncEngine) -> None:
    """A replay of an old, finished event, tried between prune's choice of that event and
    its deletes, either commits and keeps the event and its pending delivery, or is held
    off until the event is gone; it is never committed and then deleted."""
    (replayed,) = await add_events(engine, 1, "replayed")
    others = await add_events(engine, 3, "other")

    async def replay(replaying: AsyncEngine) -> dict[str, int]:
        async with replaying.begin() as connection:
            return await replay_events(
                connection, EventFilter(event_ids=(replayed,)), NOW, [destination()]
            )

    pruned, outcome = await prune_beside(engine, replay)
    kept = await rows(
        engine, sa.select(deliveries.c.state).where(deliveries.c.event_id == replayed)
    )
    if outcome["returned"]:
        assert sorted(state for (state,) in kept) == ["delivered", "pending"]
        assert pruned.events == len(others)
    else:
        assert kept == []
        assert pruned.events == len(others) + 1


async def test_concurrent_pruners_never_repeat_a_chunk(engine: AsyncEngine) -> None:
    """While one pruner holds a chunk, another takes the rest (PostgreSQL: without waiting;
    SQLite: once the first commits); every event goes once."""
    ids = await add_events(engine, CHUNK + 7)
    async with engine.connect() as first:
        await first.begin()
        if first.dialect.name == "sqlite":
            await first.exec_driver_sql("BEGIN IMMEDIATE")
        chosen, held = await prune_chunk(first, CUTOFF)
        assert (chosen, held.events) == (CHUNK, CHUNK)
        second = asyncio.create_task(prune(engine, CUTOFF, pause_seconds=0))
        if engine.dialect.name == "postgresql":
            rest = await asyncio.wait_for(second, timeout=30)
            assert rest.events == 7
            await first.commit()
        else:
            await asyncio.sleep(0.5)
            assert not second.done()  # SQLite's write lock: it waits its turn
            await first.commit()
            rest = await asyncio.wait_for(second, timeout=30)
            assert rest.events == 7
    assert held.events + rest.events == len(ids)
    assert await rows(engine, sa.select(events.c.id)) == []


async def test_prune_keeps_events_with_a_pending_delivery(engine: AsyncEngine) -> None:
    pending = await add_events(engine, 2, "pending", state=DeliveryState.PENDING)
    orphaned = await add_events(engine, 1, "orphan", state=DeliveryState.PENDING, to="removed")
    dead = await add_events(engine, 2, "dead", state=DeliveryState.DEAD)
    young = await add_events(engine, 1, "young", received_at=NOW)
    pruned = await prune(engine, CUTOFF)
    assert (pruned.events, pruned.deliveries, pruned.attempts) == (2, 2, 2)
    left = {event_id for (event_id,) in await rows(engine, sa.select(events.c.id))}
    assert left == {*pending, *orphaned, *young}
    assert not left & set(dead)


async def test_old_orphaned_deliveries_are_dead_lettered_then_pruned(engine: AsyncEngine) -> None:
    (old_orphan,) = await add_events(engine, 1, "old", state=DeliveryState.PENDING, to="removed")
    (young_orphan,) = await add_events(
        engine, 1, "young", received_at=NOW, state=DeliveryState.PENDING, to="removed"
    )
    (configured,) = await add_events(engine, 1, "kept", state=DeliveryState.PENDING)
    (leased,) = await add_events(engine, 1, "leased", state=DeliveryState.PENDING, to="removed")
    async with engine.begin() as connection:
        await connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.event_id == leased)
            .values(lease_owner="elsewhere", lease_expires_at=NOW + timedelta(minutes=1))
        )

    assert await dead_letter_orphans(engine, CUTOFF, {"default"}, NOW) == 1
    found = {
        event_id: (state, last_error)
        for event_id, state, last_error in await rows(
            engine, sa.select(deliveries.c.event_id, deliveries.c.state, deliveries.c.last_error)
        )
    }
    assert found == {
        old_orphan: ("dead", "orphaned"),
        young_orphan: ("pending", None),
        configured: ("pending", None),
        leased: ("pending", None),
    }
    assert (await prune(engine, CUTOFF)).events == 1
    left = {event_id for (event_id,) in await rows(engine, sa.select(events.c.id))}
    assert left == {young_orphan, configured, leased}
    assert await dead_letter_orphans(engine, CUTOFF, {"default"}, NOW) == 0


async def test_with_no_destination_configured_every_old_pending_delivery_is_orphaned(
    engine: AsyncEngine,
) -> None:
    await add_events(engine, 2, "any", state=DeliveryState.PENDING)
    assert await dead_letter_orphans(engine, CUTOFF, (), NOW) == 2


async def deliver_again(engine: AsyncEngine, event_id: str, to: str, state: DeliveryState) -> None:
    """Another delivery of `event_id` to `to` (its own URL), created long ago, in `state`."""
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(deliveries).values(
                event_id=event_id,
                destination=to,
                state=state,
                next_attempt_at=OLD,
                created_at=OLD,
                finished_at=OLD if state is DeliveryState.DEAD else None,
            )
        )


async def states_of(engine: AsyncEngine, event_id: str) -> list[str]:
    found = await rows(
        engine,
        sa.select(deliveries.c.state)
        .where(deliveries.c.event_id == event_id)
        .order_by(deliveries.c.id),
    )
    return [state for (state,) in found]


async def test_an_orphan_dead_lettered_with_a_newer_delivery_of_its_pair_is_replayed(
    engine: AsyncEngine,
) -> None:
    """An old orphan whose pair was queued again since (a replay, itself waiting) is made
    replayed, not dead: a pair's dead letter is its newest delivery only."""
    (event_id,) = await add_events(engine, 1, "orphan", state=DeliveryState.PENDING, to="gone")
    await deliver_again(engine, event_id, "gone", DeliveryState.PENDING)
    assert await dead_letter_orphans(engine, CUTOFF, {"default"}, NOW) == 2
    assert await states_of(engine, event_id) == ["replayed", "dead"]


async def test_an_orphan_dead_lettered_makes_its_pairs_older_dead_letter_replayed(
    engine: AsyncEngine,
) -> None:
    """The other order: the pair's older delivery is dead already, the newer an old orphan.
    Dead-lettered, the orphan is the pair's one dead letter."""
    (event_id,) = await add_events(engine, 1, "orphan", state=DeliveryState.DEAD, to="gone")
    await deliver_again(engine, event_id, "gone", DeliveryState.PENDING)
    assert await dead_letter_orphans(engine, CUTOFF, {"default"}, NOW) == 1
    assert await states_of(engine, event_id) == ["replayed", "dead"]
