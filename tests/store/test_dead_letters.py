"""Dead letters settle by their pair (event, destination, target URL), on a real database of
each backend, through the forwarder's own store calls: a replay queued makes the pair's dead
letters `replayed`, a delivery makes them `recovered`, and a pair holds one dead letter
however often it was replayed."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.deliveries import (
    AttemptRecord,
    ClaimedDelivery,
    DeliveryState,
    claim_due_deliveries,
    record_attempts,
)
from receiver.store.events import run_on
from receiver.store.filters import EventFilter, matching_event_ids
from receiver.store.replays import replay_events
from receiver.store.tables import deliveries, events
from tests.helpers import destination

pytestmark = pytest.mark.anyio

OWNER = "forwarder-1"
OTHER_URL = "https://other.example/hook"


async def died(engine: AsyncEngine, event_id: str, to: str, target_url: str | None = None) -> None:
    """`event_id` stored (if it is not yet), with one dead delivery to `to`."""
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        known = await connection.scalar(sa.select(events.c.id).where(events.c.id == event_id))
        if known is None:
            await connection.execute(
                sa.insert(events).values(
                    id=event_id, webhook_id=event_id, received_at=now, outcome="applied", body=b"{}"
                )
            )
        await connection.execute(
            sa.insert(deliveries).values(
                event_id=event_id,
                destination=to,
                state=DeliveryState.DEAD.value,
                target_url=target_url,
                attempts=5,
                next_attempt_at=now,
                created_at=now,
                finished_at=now,
            )
        )


async def replay(
    engine: AsyncEngine, event_id: str, to: str, target_url: str | None = None
) -> dict[str, int]:
    async with engine.begin() as connection:
        return await replay_events(
            connection,
            EventFilter(event_ids=(event_id,)),
            datetime.now(UTC),
            [destination(to)],
            target_url,
        )


def outcome(
    delivery: ClaimedDelivery, to: str, state: DeliveryState, at: datetime
) -> AttemptRecord:
    """`delivery`'s next attempt, made at `at`, ended in `state` (a 200, or a 503)."""
    return AttemptRecord(
        delivery_id=delivery.id,
        destination=to,
        event_id=delivery.event_id,
        target_url=delivery.target_url,
        attempt=delivery.attempts_made + 1,
        attempted_at=at,
        duration_ms=1.0,
        status_code=200 if state is DeliveryState.DELIVERED else 503,
        error_class=None,
        state=state,
        next_attempt_at=None,
    )


async def attempt(engine: AsyncEngine, to: str, state: DeliveryState) -> int:
    """Claim every due delivery to `to` and record each attempt's outcome as `state`, as the
    forwarder does; how many."""

    def work(connection: Connection) -> int:
        run, now = run_on(connection), datetime.now(UTC)
        claimed = claim_due_deliveries(run, connection.dialect, OWNER, to, 100, 30, now)
        records = [outcome(delivery, to, state, now) for delivery in claimed]
        record_attempts(run, connection.dialect, OWNER, records, now)
        return len(records)

    async with engine.begin() as connection:
        return await connection.run_sync(work)


async def states(engine: AsyncEngine, event_id: str) -> list[tuple[str, str | None, str]]:
    """(destination, target_url, state) of each delivery of `event_id`, oldest first."""
    async with engine.connect() as connection:
        found = await connection.execute(
            sa.select(deliveries.c.destination, deliveries.c.target_url, deliveries.c.state)
            .where(deliveries.c.event_id == event_id)
            .order_by(deliveries.c.id)
        )
        return [tuple(row) for row in found]


async def dead_by_filter(engine: AsyncEngine, to: str) -> list[str]:
    """The replay filter's "latest delivery to `to`: dead"."""
    which = EventFilter(delivery_state=DeliveryState.DEAD.value, destination=to)
    async with engine.connect() as connection:
        return list(await connection.scalars(matching_event_ids(which)))


async def test_a_queued_replay_makes_the_dead_letter_replayed_at_once(engine: AsyncEngine) -> None:
    await died(engine, "evt_1", "billing")
    assert await replay(engine, "evt_1", "billing") == {"billing": 1}
    assert await states(engine, "evt_1") == [
        ("billing", None, "replayed"),
        ("billing", None, "pending"),
    ]
    assert await dead_by_filter(engine, "billing") == []


async def test_a_delivery_recovers_its_pairs_dead_and_replayed_letters(
    engine: AsyncEngine,
) -> None:
    """Delivered, the replay recovers the dead letter it was queued for and one of the same
    pair that died again in between; another destination's dead letter stays dead."""
    await died(engine, "evt_1", "billing")
    await died(engine, "evt_1", "product")
    await replay(engine, "evt_1", "billing")
    assert await attempt(engine, "billing", DeliveryState.DEAD) == 1
    await replay(engine, "evt_1", "billing")
    assert await attempt(engine, "billing", DeliveryState.DELIVERED) == 1
    assert await states(engine, "evt_1") == [
        ("billing", None, "recovered"),
        ("product", None, "dead"),
        ("billing", None, "recovered"),
        ("billing", None, "delivered"),
    ]
    assert await dead_by_filter(engine, "billing") == []
    assert await dead_by_filter(engine, "product") == ["evt_1"]


async def test_a_pair_replayed_twice_that_dies_twice_keeps_one_dead_letter(
    engine: AsyncEngine,
) -> None:
    await died(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing")
    assert await attempt(engine, "billing", DeliveryState.DEAD) == 2
    assert [state for *_, state in await states(engine, "evt_1")] == [
        "replayed",
        "replayed",
        "dead",
    ]


async def test_pairs_are_told_apart_by_target_url_null_included(engine: AsyncEngine) -> None:
    """A replay to another URL, delivered, recovers the dead letters sent to that URL, not
    the one sent to the destination's own URL (target_url NULL); a replay to the
    destination's URL leaves the other URL's dead letter dead."""
    await died(engine, "evt_1", "billing")
    await died(engine, "evt_1", "billing", OTHER_URL)
    await replay(engine, "evt_1", "billing", OTHER_URL)
    assert await attempt(engine, "billing", DeliveryState.DELIVERED) == 1
    assert await states(engine, "evt_1") == [
        ("billing", None, "dead"),
        ("billing", OTHER_URL, "recovered"),
        ("billing", OTHER_URL, "delivered"),
    ]
    await died(engine, "evt_1", "billing", OTHER_URL)
    await replay(engine, "evt_1", "billing")
    assert [state for *_, state in await states(engine, "evt_1")] == [
        "replayed",
        "recovered",
        "delivered",
        "dead",
        "pending",
    ]


async def test_many_pairs_in_one_batch_settle_each_by_its_own(engine: AsyncEngine) -> None:
    """More outcomes than one settle statement holds (64): each pair is recovered, none of
    another event's."""
    ids = [f"evt_{n}" for n in range(70)]
    for event_id in ids:
        await died(engine, event_id, "billing")
    await died(engine, "evt_untouched", "billing")
    async with engine.begin() as connection:
        await replay_events(
            connection,
            EventFilter(event_ids=tuple(ids)),
            datetime.now(UTC),
            [destination("billing")],
        )
    assert await attempt(engine, "billing", DeliveryState.DELIVERED) == 70
    assert await dead_by_filter(engine, "billing") == ["evt_untouched"]
    async with engine.connect() as connection:
        recovered = await connection.scalar(
            sa.select(sa.func.count()).where(deliveries.c.state == DeliveryState.RECOVERED.value)
        )
    assert recovered == 70


async def dead_count(engine: AsyncEngine, to: str) -> int:
    """The figure every dead-letter count reads: `state = 'dead'`."""
    async with engine.connect() as connection:
        found = await connection.scalar(
            sa.select(sa.func.count()).where(
                deliveries.c.state == DeliveryState.DEAD.value, deliveries.c.destination == to
            )
        )
        return int(found or 0)


async def settle_one_by_one(engine: AsyncEngine, to: str, order: list[int]) -> None:
    """Claim every due delivery to `to` and record each, in `order` (indexes into them,
    oldest first), as gone dead, each in a transaction of its own."""

    def claim(connection: Connection) -> list[ClaimedDelivery]:
        now = datetime.now(UTC)
        return claim_due_deliveries(run_on(connection), connection.dialect, OWNER, to, 100, 30, now)

    async with engine.begin() as connection:
        claimed = sorted(await connection.run_sync(claim), key=lambda d: d.id)
    for index in order:
        delivery = claimed[index]
        record = AttemptRecord(
            delivery_id=delivery.id,
            destination=to,
            event_id=delivery.event_id,
            target_url=delivery.target_url,
            attempt=delivery.attempts_made + 1,
            attempted_at=datetime.now(UTC),
            duration_ms=1.0,
            status_code=503,
            error_class=None,
            state=DeliveryState.DEAD,
            next_attempt_at=None,
        )

        def work(connection: Connection, record: AttemptRecord = record) -> None:
            record_attempts(
                run_on(connection), connection.dialect, OWNER, [record], datetime.now(UTC)
            )

        async with engine.begin() as connection:
            await connection.run_sync(work)


async def test_a_delivery_dying_while_a_newer_one_of_its_pair_waits_is_replayed(
    engine: AsyncEngine,
) -> None:
    """The older of two replays dies while the newer is still pending: it is stored
    replayed, not dead (the pair needs no action yet), and the dead-letter filter agrees."""
    await died(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing")
    await settle_one_by_one(engine, "billing", [0])
    assert [state for *_, state in await states(engine, "evt_1")] == [
        "replayed",
        "replayed",
        "pending",
    ]
    assert (await dead_count(engine, "billing"), await dead_by_filter(engine, "billing")) == (0, [])


async def test_a_pair_keeps_one_dead_letter_whichever_of_two_replays_dies_first(
    engine: AsyncEngine,
) -> None:
    """The newer replay dies first, then the older: only the newest delivery is dead."""
    await died(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing")
    await settle_one_by_one(engine, "billing", [1, 0])
    assert [state for *_, state in await states(engine, "evt_1")] == [
        "replayed",
        "replayed",
        "dead",
    ]
    assert await dead_count(engine, "billing") == 1


async def test_the_dead_letter_filter_is_state_dead_after_a_copy_to_another_url(
    engine: AsyncEngine,
) -> None:
    """A replay to another URL (--to), delivered, neither replays nor recovers billing's own
    dead letter: the dead figure and the filter both still find it, once."""
    await died(engine, "evt_1", "billing")
    await replay(engine, "evt_1", "billing", OTHER_URL)
    assert await attempt(engine, "billing", DeliveryState.DELIVERED) == 1
    assert await dead_count(engine, "billing") == 1
    assert await dead_by_filter(engine, "billing") == ["evt_1"]
