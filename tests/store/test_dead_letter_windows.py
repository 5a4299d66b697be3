"""Dead letters counted into their destination's window (receiver/store/deliveries.py), on a
real database of each backend, through the forwarder's own store calls: a dead letter is
counted from the outcome actually written, so a forwarder whose lease another took over
counts nothing, and a delivery dies into the window once."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.deliveries import (
    ClaimedDelivery,
    DeliveryState,
    claim_due_deliveries,
    dead_letters_condition,
    record_attempts,
)
from receiver.store.events import run_on
from receiver.store.tables import conditions, deliveries, events
from tests.store.test_dead_letters import outcome

pytestmark = pytest.mark.anyio

TO = "billing"
LEASE_SECONDS = 30
# Past the first forwarder's lease: another may claim the delivery.
LEASE_EXPIRED = timedelta(seconds=2 * LEASE_SECONDS)


async def due(engine: AsyncEngine, event_id: str, at: datetime) -> None:
    """`event_id` stored, with one delivery to `TO` due at `at`, on its last attempt."""
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events).values(
                id=event_id, webhook_id=event_id, received_at=at, outcome="applied", body=b"{}"
            )
        )
        await connection.execute(
            sa.insert(deliveries).values(
                event_id=event_id,
                destination=TO,
                state=DeliveryState.PENDING.value,
                attempts=4,
                next_attempt_at=at,
                created_at=at,
            )
        )


async def claim(engine: AsyncEngine, owner: str, at: datetime) -> list[ClaimedDelivery]:
    def work(connection: Connection) -> list[ClaimedDelivery]:
        run = run_on(connection)
        return claim_due_deliveries(run, connection.dialect, owner, TO, 10, LEASE_SECONDS, at)

    async with engine.begin() as connection:
        return await connection.run_sync(work)


async def record(
    engine: AsyncEngine,
    owner: str,
    claimed: list[ClaimedDelivery],
    state: DeliveryState,
    at: datetime,
) -> None:
    """Each claimed delivery's attempt ended in `state`, written by `owner` as the forwarder
    writes it."""
    records = [outcome(delivery, TO, state, at) for delivery in claimed]

    def work(connection: Connection) -> None:
        record_attempts(run_on(connection), connection.dialect, owner, records, at)

    async with engine.begin() as connection:
        await connection.run_sync(work)


async def windows(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as connection:
        found = await connection.execute(sa.select(conditions.c.name, conditions.c.count))
        return [tuple(row) for row in found]


async def delivery_states(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(sa.select(deliveries.c.state)))


async def test_a_dead_letter_written_by_the_forwarder_holding_the_lease_is_counted_once(
    engine: AsyncEngine,
) -> None:
    """Forwarder A's lease expires and B claims the delivery; A's late dead outcome is
    refused (its lease is gone) and B's is written: one dead letter, counted once in
    billing's window, not once by each."""
    now = datetime.now(UTC)
    await due(engine, "evt_1", now - timedelta(seconds=1))
    first = await claim(engine, "forwarder-a", now)
    later = now + LEASE_EXPIRED
    second = await claim(engine, "forwarder-b", later)
    assert (len(first), len(second)) == (1, 1)
    await record(engine, "forwarder-a", first, DeliveryState.DEAD, later)
    await record(engine, "forwarder-b", second, DeliveryState.DEAD, later)
    assert await delivery_states(engine) == [DeliveryState.DEAD.value]
    assert await windows(engine) == [(dead_letters_condition(TO), 1)]


async def test_a_late_dead_outcome_of_a_delivery_another_forwarder_delivered_is_not_counted(
    engine: AsyncEngine,
) -> None:
    """B took over A's expired lease and delivered; A's dead outcome, written after, is
    refused and opens no window: no dead letter that never was."""
    now = datetime.now(UTC)
    await due(engine, "evt_1", now - timedelta(seconds=1))
    first = await claim(engine, "forwarder-a", now)
    later = now + LEASE_EXPIRED
    second = await claim(engine, "forwarder-b", later)
    await record(engine, "forwarder-b", second, DeliveryState.DELIVERED, later)
    await record(engine, "forwarder-a", first, DeliveryState.DEAD, later)
    assert await delivery_states(engine) == [DeliveryState.DELIVERED.value]
    assert await windows(engine) == []
