"""A replay of an event and the forwarder recording its retry dead, in two transactions at
once on PostgreSQL (READ COMMITTED), leave the pair one open delivery: the older is
`replayed`, never `dead` beside a pending newer one, and a dead-letter claim queues nothing
more. The claim's safety net (a superseded dead letter is settled, not queued), and a pinned
count against an attempt in flight across it, on both."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.store.deliveries import AttemptRecord, DeliveryState, record_attempts
from receiver.store.events import run_on
from receiver.store.filters import EventFilter
from receiver.store.replays import (
    claim_dead_letters,
    count_dead_letters,
    dead_letters,
    replay_events,
)
from receiver.store.statements import prepare_statements
from receiver.store.tables import attempts
from tests.helpers import destination
from tests.store.test_dead_letters import states

pytestmark = pytest.mark.anyio

OWNER = "forwarder-1"
# Long enough for a blocked statement to reach its lock wait before the other commits; the
# outcome asserted does not depend on it (on the old code the replay never waited at all).
SETTLE_SECONDS = 0.5


async def retrying(engine: AsyncEngine, state: str = DeliveryState.PENDING.value) -> int:
    """evt_1 stored with one delivery to billing in `state`, leased to OWNER; its ID."""
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO events (id, webhook_id, received_at, body, type, outcome)"
                " VALUES ('evt_1', 'wh_1', :now, :body, 't', 'applied')"
            ),
            {"now": now, "body": b"{}"},
        )
        return int(
            await connection.scalar(
                sa.text(
                    "INSERT INTO deliveries (event_id, destination, state, next_attempt_at,"
                    " created_at, attempts, lease_owner, lease_expires_at)"
                    " VALUES ('evt_1', 'billing', :state, :now, :now, 4, :owner, :expires)"
                    " RETURNING id"
                ),
                {
                    "state": state,
                    "now": now,
                    "owner": OWNER,
                    "expires": now + timedelta(minutes=5),
                },
            )
        )


async def record_dead(
    connection: AsyncConnection, delivery_id: int, began: datetime | None = None
) -> None:
    """The forwarder's write of the delivery's last attempt (begun at `began`): failed, dead."""
    record = AttemptRecord(
        delivery_id, "billing", "evt_1", None, 5, began or datetime.now(UTC), 1.0, 503, None,
        DeliveryState.DEAD, None,
    )  # fmt: skip
    await connection.run_sync(
        lambda sync: record_attempts(run_on(sync), sync.dialect, OWNER, [record], datetime.now(UTC))
    )


async def replay(connection: AsyncConnection) -> dict[str, int]:
    which = EventFilter(event_ids=("evt_1",))
    return await replay_events(connection, which, datetime.now(UTC), [destination("billing")])


async def dead_letter_ids(connection: AsyncConnection, which: EventFilter) -> list[int]:
    return [int(row.id) for row in await connection.execute(dead_letters(which, "billing"))]


async def claim(engine: AsyncEngine) -> int:
    """A dead-letter replay of billing (the console's 'Replay dead letters'): how many."""
    async with engine.begin() as connection:
        which = EventFilter(delivery_state="dead")
        ids = await dead_letter_ids(connection, which)
        return await claim_dead_letters(connection, ids, "billing", datetime.now(UTC))


# SQLite serialises writers, so the race is PostgreSQL's alone.
@pytest.mark.postgresql_only
@pytest.mark.parametrize("first", ["forwarder", "replay"])
async def test_a_retry_recorded_dead_while_its_pair_is_replayed_leaves_one_open_delivery(
    engine: AsyncEngine, first: str
) -> None:
    """Whichever transaction writes first, the other waits for it: the retry ends
    `replayed` beside the pending replay, and a dead-letter claim then queues no third copy."""
    prepare_statements(engine.dialect)
    delivery_id = await retrying(engine)
    forwarder, operator = await engine.connect(), await engine.connect()
    try:
        await forwarder.begin()
        await operator.begin()
        if first == "forwarder":
            await record_dead(forwarder, delivery_id)
            replaying = asyncio.create_task(replay(operator))
            await asyncio.sleep(SETTLE_SECONDS)
            await forwarder.commit()
            assert await replaying == {"billing": 1}
            await operator.commit()
        else:
            assert await replay(operator) == {"billing": 1}
            recording = asyncio.create_task(record_dead(forwarder, delivery_id))
            await asyncio.sleep(SETTLE_SECONDS)
            await operator.commit()
            await recording
            await forwarder.commit()
    finally:
        await forwarder.close()
        await operator.close()
    assert await states(engine, "evt_1") == [
        ("billing", None, "replayed"),
        ("billing", None, "pending"),
    ]
    assert await claim(engine) == 0


async def test_a_claim_settles_a_superseded_dead_letter_without_queueing(
    engine: AsyncEngine,
) -> None:
    """A dead letter stored beside a newer pending delivery of its pair (however it came
    about) is made `replayed` by a claim, and nothing is queued for it."""
    await retrying(engine, DeliveryState.DEAD.value)
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO deliveries (event_id, destination, state, next_attempt_at,"
                " created_at, attempts) VALUES ('evt_1', 'billing', 'pending', :now, :now, 0)"
            ),
            {"now": datetime.now(UTC)},
        )
    async with engine.begin() as connection:
        ids = await dead_letter_ids(connection, EventFilter())
        assert len(ids) == 1
        assert await claim_dead_letters(connection, ids, "billing", datetime.now(UTC)) == 0
    assert await states(engine, "evt_1") == [
        ("billing", None, "replayed"),
        ("billing", None, "pending"),
    ]


async def test_a_confirmation_leaves_out_an_attempt_in_flight_across_its_count(
    engine: AsyncEngine,
) -> None:
    """A retry whose last attempt began before a dry run counted, recorded dead after it,
    died after the count: the pinned confirmation (`dead_by`) does not replay it, and its
    attempt row still says when the attempt began."""
    prepare_statements(engine.dialect)
    delivery_id = await retrying(engine)
    counted_at = datetime.now(UTC)
    began = counted_at - timedelta(seconds=5)
    which = EventFilter(delivery_state="dead", dead_by=counted_at)
    async with engine.begin() as connection:
        assert await count_dead_letters(connection, which, "billing", 10_000) == (0, None)
    async with engine.begin() as connection:
        await record_dead(connection, delivery_id, began)
    async with engine.connect() as connection:
        assert await dead_letter_ids(connection, which) == []
        assert await dead_letter_ids(connection, EventFilter()) == [delivery_id]
        attempted_at = await connection.scalar(sa.select(attempts.c.attempted_at))
    assert attempted_at == began
