"""Which stored events a replay sends each destination (receiver/store/replays.py), on a
real database of each backend: by its filters, the SQL chooses exactly what
`Destination.wants` chooses, the service's own `receiver.*` events included; a destination
named is sent every event matched, whatever its filters, but the service's own only where
it names them or the replay asks for them by type or ID."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import Destination
from receiver.store.filters import EventFilter
from receiver.store.replays import count_replay, events_to_replay, replay_events
from receiver.store.tables import deliveries, events
from tests.helpers import destination

pytestmark = pytest.mark.anyio

# (type, outcome) of each stored event: Rivya's, one with no type, and the service's own.
STORED = [
    ("generation.succeeded", "applied"),
    ("generation.failed", "applied"),
    ("generation.succeeded", "stale"),
    (None, "quarantined"),
    ("receiver.delivery.dead", "ignored"),
    ("receiver.credits.low", "ignored"),
    ("receiver.credits.recovered", "ignored"),
    # Not the prefix: `_` is a LIKE wildcard, `receiver` alone is no operational type, and
    # SQLite's LIKE ignores case, which `is_operational` does not.
    ("receiver_delivery.dead", "applied"),
    ("receiver", "applied"),
    ("Receiver.delivery.dead", "applied"),
]

DESTINATIONS = [
    destination("everything"),
    destination("failures", event_types={"generation.failed"}),
    destination("stale", outcomes={"stale"}),
    destination("ops", event_types={"receiver.*"}),
    destination("low", event_types={"receiver.credits.low"}),
    destination("both", event_types={"generation.failed", "receiver.*"}, outcomes={"applied"}),
]
# What each is sent, as indexes into STORED: the service's own events (4, 5, 6) only where
# named, whatever their outcome.
WANTED = {
    "everything": [0, 1, 3, 7, 8, 9],
    "failures": [1],
    "stale": [2],
    "ops": [4, 5, 6],
    "low": [5],
    "both": [1, 4, 5, 6],
}


async def store(engine: AsyncEngine) -> dict[str, tuple[str | None, str]]:
    """Each of STORED as an event, oldest first: (type, outcome) by ID."""
    now = datetime.now(UTC)
    stored = {f"evt_{i}": kind for i, kind in enumerate(STORED)}
    async with engine.begin() as connection:
        for i, (event_id, (event_type, outcome)) in enumerate(stored.items()):
            await connection.execute(
                sa.insert(events).values(
                    id=event_id,
                    webhook_id=event_id,
                    type=event_type,
                    received_at=now + timedelta(milliseconds=i),
                    outcome=outcome,
                    body=b"{}",
                )
            )
    return stored


async def chosen(engine: AsyncEngine, to: Destination, filtered: bool) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(events_to_replay(EventFilter(), to, filtered)))


@pytest.mark.parametrize("to", DESTINATIONS, ids=[d.name for d in DESTINATIONS])
async def test_a_replay_by_filter_chooses_what_the_destination_wants(
    engine: AsyncEngine, to: Destination
) -> None:
    """In SQL as `Destination.wants` decides, counted as chosen, queued as counted."""
    stored = await store(engine)
    wanted = [event_id for event_id, kind in stored.items() if to.wants(*kind)]
    assert wanted == [f"evt_{i}" for i in WANTED[to.name]]
    assert await chosen(engine, to, filtered=True) == wanted
    async with engine.begin() as connection:
        assert await count_replay(connection, EventFilter(), to, True, 100) == len(wanted)
        queued = await replay_events(connection, EventFilter(), datetime.now(UTC), [to])
    assert queued == ({to.name: len(wanted)} if wanted else {})
    async with engine.connect() as connection:
        sent = await connection.scalars(
            sa.select(deliveries.c.event_id).where(deliveries.c.destination == to.name)
        )
        assert sorted(sent) == sorted(wanted)


async def test_a_replay_by_type_of_operational_events_goes_only_where_they_are_named(
    engine: AsyncEngine,
) -> None:
    """`receiver replay --type receiver.delivery.dead` with no destination: to `ops` and
    `both`, never to a destination that names no types or Rivya's alone."""
    await store(engine)
    which = EventFilter(type="receiver.delivery.dead")
    async with engine.begin() as connection:
        queued = await replay_events(connection, which, datetime.now(UTC), DESTINATIONS)
    assert queued == {"ops": 1, "both": 1}


@pytest.mark.parametrize("to", DESTINATIONS, ids=[d.name for d in DESTINATIONS])
async def test_a_replay_to_a_named_destination_sends_whatever_its_filters(
    engine: AsyncEngine, to: Destination
) -> None:
    """Every event, but the service's own only where the destination names them; asked
    for by type (or ID), they go whatever it names."""
    stored = await store(engine)
    ours = [f"evt_{i}" for i in (4, 5, 6) if i not in WANTED[to.name]]
    assert await chosen(engine, to, filtered=False) == [e for e in stored if e not in ours]
    which = EventFilter(type="receiver.credits.recovered")
    async with engine.begin() as connection:
        assert await count_replay(connection, which, to, False, 100) == 1
        queued = await replay_events(connection, which, datetime.now(UTC), [to], filtered=False)
    assert queued == {to.name: 1}
