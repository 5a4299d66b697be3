"""Replays and reprocessing as the CLI, the admin API and the console run them
(receiver/operators/replays.py, actions.py), on a real database of each backend: dead
letters are claimed, so two replays at once queue each once; a replay queues what was
counted and no more (dead letters up to the largest counted, dead by when it counted); a
failure part-way says what was done; a bulk reprocess skips events retention removed after
they were chosen."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from receiver.exceptions import StoppedPartWayError
from receiver.operators import actions, replays
from receiver.operators.replays import Leg, Replayed
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.replays import count_dead_letters
from receiver.store.tables import deliveries, events
from tests.helpers import destination, make_event
from tests.store.test_dead_letters import (
    OTHER_URL,
    attempt,
    dead_by_filter,
    dead_count,
    died,
    replay,
)

pytestmark = pytest.mark.anyio

DEAD = EventFilter(delivery_state=DeliveryState.DEAD.value, destination="billing")


def dead_letters_of(name: str, counted: Replayed | None = None) -> list[Leg]:
    """`name`'s dead letters, pinned to what `counted` (a dry run) counted if given."""
    which = EventFilter(delivery_state=DeliveryState.DEAD.value, destination=name)
    if counted is not None:
        which = replace(which, up_to=counted.up_to, dead_by=counted.dead_by)
    return [Leg(destination(name), which)]


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(
            sa.select(sa.func.count()).where(deliveries.c.state == DeliveryState.PENDING.value)
        )
        return int(found or 0)


async def replay_all(engine: AsyncEngine, plan: list[Leg]) -> Replayed:
    return await replays.replay(engine, await replays.resolve_plan(engine, plan), "test")


async def test_two_replays_of_the_same_dead_letters_at_once_queue_each_once(
    engine: AsyncEngine,
) -> None:
    """Both resolved the same five dead letters; run together, the claims split them: five
    deliveries queued in all, and the two answers add up to five."""
    for n in range(5):
        await died(engine, f"evt_{n}", "billing")
    plan = dead_letters_of("billing")
    first, second = await asyncio.gather(*[replays.resolve_plan(engine, plan) for _ in range(2)])
    a, b = await asyncio.gather(
        replays.replay(engine, first, "test"), replays.replay(engine, second, "test")
    )
    assert await pending(engine) == 5
    assert a.deliveries + b.deliveries == 5
    assert await dead_count(engine, "billing") == 0


async def test_a_stale_replay_of_a_dead_letter_already_replayed_queues_nothing(
    engine: AsyncEngine,
) -> None:
    """Resolved (a stale tab, a second CLI run), then another replay claims the letter
    first: the stale one reports 0."""
    await died(engine, "evt_1", "billing")
    stale = await replays.resolve_plan(engine, dead_letters_of("billing"))
    assert (await replay_all(engine, dead_letters_of("billing"))).by_destination == {"billing": 1}
    assert (await replays.replay(engine, stale, "test")).deliveries == 0
    assert await pending(engine) == 1


async def test_each_dead_letter_is_replayed_to_its_own_target_url(engine: AsyncEngine) -> None:
    """billing holds two dead letters of one event (its own URL, and a copy sent elsewhere
    that died): a dead-letter replay sends each again where it died."""
    await died(engine, "evt_1", "billing")
    await died(engine, "evt_1", "billing", OTHER_URL)
    assert (await replay_all(engine, dead_letters_of("billing"))).by_destination == {"billing": 2}
    async with engine.connect() as connection:
        queued = await connection.execute(
            sa.select(deliveries.c.target_url).where(deliveries.c.state == "pending")
        )
        assert sorted(str(url) for (url,) in queued) == ["None", OTHER_URL]


async def test_a_copy_to_another_url_leaves_the_dead_letter_to_its_own_replay(
    engine: AsyncEngine,
) -> None:
    """After a --to replay (delivered), the dead count and the dead filter agree (1), and a
    replay of billing's dead letters clears it."""
    await died(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing", OTHER_URL)
    await attempt(engine, "billing", DeliveryState.DELIVERED)
    assert await dead_count(engine, "billing") == len(await dead_by_filter(engine, "billing")) == 1
    assert (await replays.count_planned(engine, dead_letters_of("billing"))).deliveries == 1
    assert (await replay_all(engine, dead_letters_of("billing"))).deliveries == 1
    await attempt(engine, "billing", DeliveryState.DELIVERED)
    assert await dead_count(engine, "billing") == len(await dead_by_filter(engine, "billing")) == 0


async def test_a_confirmation_replays_what_its_dry_run_counted(engine: AsyncEngine) -> None:
    """The dry run pins the largest dead letter it counted (`up_to`); a letter that dies
    between the count and the confirmation is left for the next replay."""
    await died(engine, "evt_1", "billing")
    counted = await replays.count_planned(engine, dead_letters_of("billing"))
    await died(engine, "evt_2", "billing")
    done = await replay_all(engine, dead_letters_of("billing", counted))
    assert (counted.deliveries, done.deliveries) == (1, 1)
    assert await dead_by_filter(engine, "billing") == ["evt_2"]


async def test_a_confirmation_leaves_a_letter_retrying_at_the_count_that_died_since(
    engine: AsyncEngine,
) -> None:
    """The dry run also pins when it counted (`dead_by`): a delivery created before the
    counted dead letter (its ID below `up_to`), still retrying at the count, that dies
    before the confirmation is left for the next replay."""
    await died(engine, "evt_0", "product")
    await replay(engine, "evt_0", "billing")
    await died(engine, "evt_1", "billing")
    counted = await replays.count_planned(engine, dead_letters_of("billing"))
    assert counted.dead_by is not None
    assert await attempt(engine, "billing", DeliveryState.DEAD) == 1
    assert sorted(await dead_by_filter(engine, "billing")) == ["evt_0", "evt_1"]
    done = await replay_all(engine, dead_letters_of("billing", counted))
    assert (counted.deliveries, done.deliveries) == (1, 1)
    assert await dead_by_filter(engine, "billing") == ["evt_0"]


# The database refuses any new delivery to `product`.
REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_product BEFORE INSERT ON deliveries "
        "WHEN NEW.destination = 'product' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_product() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused'; END $$",
        "CREATE TRIGGER refuse_product BEFORE INSERT ON deliveries FOR EACH ROW "
        "WHEN (NEW.destination = 'product') EXECUTE FUNCTION refuse_product()",
    ],
}


async def test_a_replay_that_fails_part_way_says_and_audits_what_it_queued(
    engine: AsyncEngine,
) -> None:
    """The database refuses the second leg (product): the first (billing) stays queued,
    the error says so in numbers, and the audit line counts it."""
    await died(engine, "evt_1", "billing")
    await died(engine, "evt_1", "product")
    async with engine.begin() as connection:
        for statement in REFUSE[engine.dialect.name]:
            await connection.exec_driver_sql(statement)
    plan = [*dead_letters_of("billing"), *dead_letters_of("product")]
    resolved = await replays.resolve_plan(engine, plan)
    with capture_logs() as logs, pytest.raises(StoppedPartWayError) as raised:
        await replays.replay(engine, resolved, "test")
    assert str(raised.value).startswith("The replay stopped part-way (an unforeseen failure, ")
    assert str(raised.value).endswith("): 1 delivery: billing 1 queued before it.")
    assert await pending(engine) == 1
    audit = [line for line in logs if line.get("event") == "audit"]
    assert [(a["count"], a["by_destination"]) for a in audit] == [(1, {"billing": 1})]


async def test_a_bulk_reprocess_skips_and_counts_events_removed_after_they_were_chosen(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        for n in range(3):
            event = make_event(event_id=f"evt_{n}")
            await connection.execute(
                sa.insert(events).values(
                    id=event["id"],
                    webhook_id=event["id"],
                    received_at=now,
                    outcome="quarantined",
                    quarantine_reason="missing_generation",
                    body=orjson.dumps(event),
                )
            )
    chosen = await actions.matching_ids(engine, EventFilter(outcome="quarantined"))
    async with engine.begin() as connection:
        await connection.execute(sa.delete(events).where(events.c.id == "evt_1"))
    counts = await actions.reprocess(engine, chosen, "test", [destination("billing")])
    assert (counts.reprocessed, counts.gone) == (2, 1)
    assert "1 removed by retention meanwhile" in str(counts)


async def test_a_dry_run_past_its_bound_still_pins_the_newest_dead_letter(
    engine: AsyncEngine,
) -> None:
    """Counted no further than its bound, the count still pins the newest dead letter:
    the confirmation replays them all, not an arbitrary few."""
    for n in range(5):
        await died(engine, f"evt_{n}", "billing")
    async with engine.connect() as connection:
        n, up_to = await count_dead_letters(connection, DEAD, "billing", 2)
        newest = await connection.scalar(sa.select(sa.func.max(deliveries.c.id)))
    assert (n, up_to) == (3, newest)
