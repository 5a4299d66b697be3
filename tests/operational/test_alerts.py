"""The operational checks in-process (receiver/operational/alerts.py), on a real database of
each backend, where what they count is taken from under them: a window of dead letters
whose events were pruned, of a destination since removed; and a database that cannot be
reached, which fails nothing that raised."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from receiver.destinations import Destination
from receiver.model import Event
from receiver.operational.alerts import Alerts
from receiver.operational.events import OperationalEvent, OperationalType
from receiver.operators.actions import prune_older_than
from receiver.settings import Settings
from receiver.store.database import create_engine
from receiver.store.deliveries import DeliveryState
from receiver.store.events import Submission, run_on, store_events
from receiver.store.tables import conditions, deliveries, events
from tests.helpers import destination, new_secret
from tests.store.test_dead_letters import attempt

pytestmark = pytest.mark.anyio

OPS = destination("ops", event_types={"receiver.*"})
BILLING = destination("billing")
# Longer than `settings_of`'s coalescing window, so that a check after it closes the window.
WINDOW_PASSED = 0.05
# Windows of `ops` that would each have raised one more event about it, before the fix.
WINDOWS_WATCHED = 3
# Checks of each disagreeing replica, each of which told people once more before the fix.
DISAGREEING_CHECKS = 3


def settings_of(*destinations: Destination) -> Settings:
    return Settings(
        signing_secrets=new_secret(),
        destinations=destinations,
        alert_coalesce_seconds=0.01,
        low_credits_threshold=10,
    )


async def store(engine: AsyncEngine, n: int) -> None:
    """`n` Rivya events, each with a pending delivery to `billing`."""
    now = datetime.now(UTC)
    batch = [
        Submission(Event(f"evt_{i}", "generation.succeeded"), f"evt_{i}", b"{}", now)
        for i in range(n)
    ]

    def work(connection: Connection) -> None:
        store_events(run_on(connection), connection.dialect, batch, [BILLING])

    async with engine.begin() as connection:
        await connection.run_sync(work)


async def stored_of(engine: AsyncEngine, event_type: str) -> list[tuple[bytes, list[str]]]:
    """Each stored event of `event_type`: its body, and the destinations it is queued to."""
    async with engine.connect() as connection:
        found = await connection.execute(
            sa.select(events.c.id, events.c.body).where(events.c.type == event_type)
        )
        result = []
        for event_id, body in found.all():
            to = await connection.scalars(
                sa.select(deliveries.c.destination).where(deliveries.c.event_id == event_id)
            )
            result.append((bytes(body), list(to)))
        return result


async def test_a_window_outlives_its_pruned_dead_letters_and_its_removed_destination(
    engine: AsyncEngine,
) -> None:
    """Dead letters counted, then pruned, and `billing` gone from the configuration before
    the window closes: it closes once, with its count, naming none it cannot find."""
    await store(engine, 3)
    assert await attempt(engine, "billing", DeliveryState.DEAD) == 3
    pruned = await prune_older_than(engine, datetime.now(UTC) + timedelta(seconds=1), "test")
    assert pruned.events == 3
    alerts = Alerts(engine, settings_of(OPS))
    await alerts.check()
    await alerts.check()
    ((body, to),) = await stored_of(engine, OperationalType.DELIVERY_DEAD)
    data = orjson.loads(body)["data"]
    assert (data["destination"], data["count"], data["first"]) == ("billing", 3, [])
    assert to == ["ops"]
    async with engine.connect() as connection:
        assert (await connection.execute(sa.select(conditions))).all() == []


async def test_a_condition_in_progress_is_raised_once_and_an_end_without_one_stores_nothing(
    engine: AsyncEngine,
) -> None:
    alerts = Alerts(engine, settings_of(OPS, BILLING))
    now = datetime.now(UTC)
    low = OperationalEvent(OperationalType.CREDITS_LOW, "credits", now, now, {"balance": 1})
    assert await alerts.start(low)
    later = now + timedelta(seconds=1)
    assert not await alerts.start(
        OperationalEvent(OperationalType.CREDITS_LOW, "credits", later, later, {"balance": 0})
    )
    assert not await alerts.end("no-such-condition", lambda since: None)
    ((body, to),) = await stored_of(engine, OperationalType.CREDITS_LOW)
    assert (orjson.loads(body)["id"], to) == (low.event_id, ["ops"])


@pytest.mark.any_backend
async def test_a_database_that_cannot_be_reached_fails_nothing_that_raised(
    tmp_path: Path,
) -> None:
    """Logged once per raise as `operational_event_failed`, never raised into the caller
    (the forwarder, a pass, the check)."""
    unreachable = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'r.db'}", 1)
    alerts = Alerts(unreachable, settings_of(OPS, BILLING))
    with capture_logs() as logs:
        await alerts.credits_read(0)
        await alerts.key_refused("api_key_invalid")
        await alerts.key_accepted()
    await unreachable.dispose()
    failed = [line for line in logs if line["event"] == "operational_event_failed"]
    assert len(failed) == 3
    assert {line["error_class"] for line in failed} == {"StoreUnavailableError"}


async def test_a_dead_delivery_of_the_services_own_event_opens_no_window_of_its_own(
    engine: AsyncEngine,
) -> None:
    """`ops` (subscribed to `receiver.*`) is down: the `receiver.delivery.dead` about
    `billing` dies on its way to it, and window after window no `dead:ops` is counted nor
    any `receiver.delivery.dead` about `ops` raised (each would be one more to die)."""
    await store(engine, 2)
    assert await attempt(engine, "billing", DeliveryState.DEAD) == 2
    alerts = Alerts(engine, settings_of(OPS, BILLING))
    await anyio.sleep(WINDOW_PASSED)
    await alerts.check()
    ((body, to),) = await stored_of(engine, OperationalType.DELIVERY_DEAD)
    assert (orjson.loads(body)["data"]["destination"], to) == ("billing", ["ops"])
    assert await attempt(engine, "ops", DeliveryState.DEAD) == 1
    for _ in range(WINDOWS_WATCHED):
        await anyio.sleep(WINDOW_PASSED)
        await alerts.check()
        # Were a window of `ops` raised, its event to `ops` would die here in turn.
        await attempt(engine, "ops", DeliveryState.DEAD)
    stored = await stored_of(engine, OperationalType.DELIVERY_DEAD)
    assert [orjson.loads(body)["data"]["destination"] for body, _ in stored] == ["billing"]
    async with engine.connect() as connection:
        assert list(await connection.scalars(sa.select(conditions.c.name))) == []
        died = await connection.scalars(
            sa.select(deliveries.c.state).where(deliveries.c.destination == "ops")
        )
        assert list(died) == [DeliveryState.DEAD.value]


async def test_conditions_of_a_destination_no_longer_configured_end_quietly(
    engine: AsyncEngine,
) -> None:
    """`backlog:gone` and `paused:gone`, left by a destination since removed, are ended
    by the check with no event; `paused:billing`, still configured, stays."""
    long_ago = datetime.now(UTC) - timedelta(days=1)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(conditions),
            [
                {"name": name, "started_at": long_ago, "count": 0}
                for name in ("backlog:gone", "paused:gone", "paused:billing")
            ],
        )
    await Alerts(engine, settings_of(OPS, BILLING)).check()
    async with engine.connect() as connection:
        left = await connection.scalars(sa.select(conditions.c.name))
        assert list(left) == ["paused:billing"]
        assert (await connection.execute(sa.select(events.c.id))).all() == []


async def test_a_condition_raised_again_with_an_event_stored_before_tells_no_one(
    engine: AsyncEngine,
) -> None:
    """Its row removed by hand, `credits` is raised again with the same event (same ID,
    already stored): no second notification, no second count, one event stored and
    queued to `ops` once."""
    told: list[OperationalEvent] = []
    counted: list[str] = []
    alerts = Alerts(engine, settings_of(OPS, BILLING), notify=told.append, on_raised=counted.append)
    now = datetime.now(UTC)
    low = OperationalEvent(OperationalType.CREDITS_LOW, "credits", now, now, {"balance": 1})
    assert await alerts.start(low)
    async with engine.begin() as connection:
        await connection.execute(sa.delete(conditions).where(conditions.c.name == "credits"))
    assert not await alerts.start(low)
    assert told == [low]
    assert counted == [OperationalType.CREDITS_LOW.value]
    ((body, to),) = await stored_of(engine, OperationalType.CREDITS_LOW)
    assert (orjson.loads(body)["id"], to) == (low.event_id, ["ops"])


async def test_replicas_disagreeing_on_the_backlog_threshold_tell_people_once_each_way(
    engine: AsyncEngine,
) -> None:
    """A rolling change of RECEIVER_ALERT_BACKLOG_AGE_SECONDS: billing's oldest delivery
    (1000 s) is stuck for one replica (900 s) and not for the other (1800 s), which end and
    raise it again check after check. Each raise and end after the first two has an ID
    stored before: people are told of the stuck backlog and of its clearing once each."""
    queued = datetime.now(UTC) - timedelta(seconds=1000)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events).values(
                id="evt_1", webhook_id="evt_1", received_at=queued, outcome="applied", body=b"{}"
            )
        )
        await connection.execute(
            sa.insert(deliveries).values(
                event_id="evt_1",
                destination="billing",
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=queued,
                created_at=queued,
            )
        )
    told: list[OperationalEvent] = []

    def replica(threshold: float) -> Alerts:
        settings = settings_of(OPS, BILLING).model_copy(
            update={"alert_backlog_age_seconds": threshold}
        )
        return Alerts(engine, settings, notify=told.append)

    stuck_at, cleared_at = replica(900), replica(1800)
    for _ in range(DISAGREEING_CHECKS):
        await stuck_at.check()
        await cleared_at.check()
    assert [event.type for event in told] == [
        OperationalType.BACKLOG_STUCK,
        OperationalType.BACKLOG_CLEARED,
    ]
    assert len(await stored_of(engine, OperationalType.BACKLOG_STUCK)) == 1
    assert len(await stored_of(engine, OperationalType.BACKLOG_CLEARED)) == 1


async def test_low_credits_end_quietly_once_the_threshold_is_unset(engine: AsyncEngine) -> None:
    """Raised under a threshold that is then unset: the next balance read ends it with no
    event, so that set again later it is raised again (not a no-op on a row left behind)."""
    told: list[OperationalEvent] = []
    low = Alerts(engine, settings_of(OPS), notify=told.append)
    await low.credits_read(5)
    unset = settings_of(OPS).model_copy(update={"low_credits_threshold": None})
    await Alerts(engine, unset, notify=told.append).credits_read(5)
    async with engine.connect() as connection:
        assert (await connection.execute(sa.select(conditions.c.name))).all() == []
    await low.credits_read(5)
    assert [event.type for event in told] == [OperationalType.CREDITS_LOW] * 2
    assert len(await stored_of(engine, OperationalType.CREDITS_RECOVERED)) == 0


async def test_a_check_ends_only_the_pause_it_read_not_one_raised_since(
    engine: AsyncEngine,
) -> None:
    """A check that read billing's pause started at T1 ends it only if it is still that one:
    a pause raised since (T2, after another replica ended T1's) stays, and no resumed is
    told for it."""
    told: list[OperationalEvent] = []
    alerts = Alerts(engine, settings_of(OPS, BILLING), notify=told.append)
    first, since = datetime.now(UTC) - timedelta(minutes=2), datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(conditions).values(name="paused:billing", started_at=since, count=0)
        )
    assert not await alerts.end("paused:billing", lambda _: None, first)
    async with engine.connect() as connection:
        left = (await connection.execute(sa.select(conditions.c.started_at))).scalars().all()
    assert left == [since]
    assert told == []
