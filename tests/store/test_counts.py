"""The replay page's count on a real database of each backend: whichever side it starts
from (the events a window keeps, or the deliveries in a state), it finds the events with a
dead letter (to a destination, if named) for `dead`, as every dead-letter figure does, and
otherwise those whose latest delivery (to it) is in that state; it stops past its bound."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import create_engine, upgrade_schema
from receiver.store.filters import EventFilter, count_matching_events
from receiver.store.queries import count_events
from receiver.store.tables import deliveries, events

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=2)
NEW = NOW - timedelta(hours=1)
# Each event's deliveries, oldest first: (destination, state).
HISTORIES = {
    "old_dead": [("default", "dead")],
    "old_delivered": [("default", "delivered")],
    "old_replayed": [("default", "replayed"), ("default", "pending")],
    "new_dead": [("default", "dead")],
    "new_dead_2": [("default", "dead")],
    "new_dead_then_archived": [("default", "dead"), ("archive", "delivered")],
    "new_archive_dead": [("archive", "dead")],
    "new_delivered": [("default", "delivered")],
    "new_dead_twice": [("default", "replayed"), ("default", "dead")],
}


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(new_database(tmp_path), 10)
    await upgrade_schema(engine)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events),
            [
                {
                    "id": event_id,
                    "webhook_id": event_id,
                    "received_at": NEW if event_id.startswith("new") else OLD,
                    "outcome": "applied",
                    "body": b"{}",
                }
                for event_id in HISTORIES
            ],
        )
        for event_id, history in HISTORIES.items():
            for to, state in history:  # one at a time: IDs in the order of the history
                await connection.execute(
                    sa.insert(deliveries).values(
                        event_id=event_id,
                        destination=to,
                        state=state,
                        next_attempt_at=NOW,
                        created_at=NOW,
                    )
                )
    yield engine
    await engine.dispose()


def expected(which: EventFilter) -> int:
    """The definition, event by event."""
    found = 0
    for event_id, history in HISTORIES.items():
        received_at = NEW if event_id.startswith("new") else OLD
        if which.since is not None and received_at < which.since:
            continue
        to = [state for name, state in history if which.destination in (None, name)]
        if which.delivery_state == "dead":
            found += "dead" in to
        else:
            found += bool(to) and to[-1] == which.delivery_state
    return found


FILTERS = [
    EventFilter(delivery_state=state, destination=to, since=since)
    for state in ("dead", "delivered", "pending")
    for to in (None, "default", "archive")
    for since in (None, NOW - timedelta(days=1))
]


def _named(which: EventFilter) -> str:
    """A test ID the same in every xdist worker (NOW differs between them)."""
    window = "last-day" if which.since else "any-time"
    return f"{which.delivery_state}-to-{which.destination or 'any'}-{window}"


@pytest.mark.parametrize("which", FILTERS, ids=_named)
async def test_both_starting_sides_count_the_events_whose_latest_delivery_is_in_the_state(
    engine: AsyncEngine, which: EventFilter
) -> None:
    async with engine.connect() as connection:
        counted = {
            from_events: (
                await connection.execute(count_matching_events(which, 100, from_events))
            ).scalar_one()
            for from_events in (False, True)
        }
        chosen = await count_events(connection, which, 100)
    assert counted == {False: expected(which), True: expected(which)}
    assert chosen == expected(which)


async def test_the_count_stops_one_past_its_limit(engine: AsyncEngine) -> None:
    dead = EventFilter(delivery_state="dead")
    assert expected(dead) == 6
    async with engine.connect() as connection:
        assert await count_events(connection, dead, 2) == 3
        assert await count_events(connection, dead, 6) == 6
        assert await count_events(connection, EventFilter(), 5) == 6
        since = EventFilter(delivery_state="dead", since=NOW - timedelta(days=1))
        assert await count_events(connection, since, 1) == 2
