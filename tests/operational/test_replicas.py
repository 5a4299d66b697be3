"""Two `receiver serve` replicas on one PostgreSQL database, each forwarding, each checking,
each with the same notification URL, raise each condition once and end it once: the
subscribed sink is sent one event of each type, the events table holds one, and the
notification endpoint is sent one message. Which replica raises it is decided in the
database (the `conditions` table); each replica sees the condition on its own."""

import signal
import threading
import time
from collections.abc import Callable

import orjson
import pytest

from tests.conftest import Rivya, Sensitive
from tests.helpers import (
    ANSWER_200,
    ONE_ATTEMPT,
    Received,
    ReceiverProcess,
    Respond,
    always,
    make_event,
    wait_until,
)
from tests.operational.observed import Sinks, stored

pytestmark = pytest.mark.postgresql_only

CHECK_SECONDS = "0.2"
# Checks that would raise or end a condition a second time have had time to, many times.
SETTLE_SECONDS = 10 * float(CHECK_SECONDS)
FAILED = "generation.failed"
DEAD = ("receiver.delivery.dead", "Dead letters: billing")


class Replicas:
    """Two replicas on the test's database, with `billing` (the test's sink) and the
    subscribed `ops`, and the one notification endpoint; events are sent with `secret`."""

    def __init__(
        self, processes: list[ReceiverProcess], sinks: Sinks, secret: str, sensitive: Sensitive
    ) -> None:
        self.processes, self.sinks = processes, sinks
        self.secret, self.sensitive = secret, sensitive

    def admin(self, index: int = 0) -> Rivya:
        return Rivya(self.processes[index], self.secret, self.sensitive)

    def send(self, event_types: list[str]) -> None:
        """An event of each type, to each replica in turn."""
        for n, event_type in enumerate(event_types):
            response = self.admin(n % 2).send(make_event(event_type=event_type))
            assert response.status_code == 200

    def each_once(self, *kinds: tuple[str, str]) -> None:
        """Each (type, message title) once: at the sink, in the events table, at the
        endpoint; and logged as raised by one replica alone."""
        for event_type, title in kinds:
            self.wait_for(event_type, title)
        time.sleep(SETTLE_SECONDS)
        for event_type, title in kinds:
            (event,) = self.sinks.received(event_type)
            assert [e["payload"] for e in stored(self.admin(), event_type)] == [event]
            assert len(self.sinks.messages(title)) == 1, title
            raised = [
                line
                for process in self.processes
                for line in map(orjson.loads, process.output().splitlines())
                if (line["event"], line.get("event_id")) == ("operational_event", event["id"])
            ]
            assert len(raised) == 1, event_type

    def wait_for(self, event_type: str, title: str) -> None:
        wait_until(lambda: self.sinks.received(event_type) != [], timeout=60, what=event_type)
        wait_until(lambda: self.sinks.messages(title) != [], timeout=30, what=title)

    def logged_by_both(self, text: str) -> bool:
        return all(text in process.output() for process in self.processes)


StartReplicas = Callable[..., Replicas]


@pytest.fixture
def start_replicas(
    start_server: Callable[..., ReceiverProcess],
    sinks: Callable[..., Sinks],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> StartReplicas:
    """Replicas whose `billing` answers with `respond` after `delay`, `max_in_flight`
    deliveries at a time; `overrides` are settings of both."""

    def start(
        respond: Respond = ANSWER_200,
        delay: float = 0.0,
        max_in_flight: int = 1,
        **overrides: str,
    ) -> Replicas:
        made = sinks(respond, delay, max_in_flight=max_in_flight)
        processes = [
            start_server(**made.settings, alert_check_seconds=CHECK_SECONDS, **overrides)
            for _ in range(2)
        ]
        return Replicas(processes, made, secrets_in_use[0], sensitive)

    return start


def test_dead_letters_recorded_by_both_replicas_are_one_event_counting_them_all(
    start_replicas: StartReplicas,
) -> None:
    """A lane one wide and a slow 500 on each replica, one attempt each: both claim, both
    record dead letters (fewer than the breaker's 20 in a row), into one window."""
    letters = 16
    replicas = start_replicas(
        always(500), 0.2, alert_coalesce_seconds="10", forward_retry_schedule=ONE_ATTEMPT
    )
    replicas.send([FAILED] * letters)
    replicas.each_once(DEAD)
    (event,) = replicas.sinks.received(DEAD[0])
    assert (event["data"]["destination"], event["data"]["count"]) == ("billing", letters)
    assert replicas.logged_by_both('"delivery_state":"dead"'), "one replica did not forward"
    (message,) = replicas.sinks.messages(DEAD[1])
    assert f"{letters} deliveries to billing gave up (dead)." in message.message


def test_a_backlog_both_replicas_see_is_stuck_once_and_cleared_once(
    start_replicas: StartReplicas,
) -> None:
    """A slow but healthy destination (one at a time, 1.5 s each): its oldest pending
    delivery passes the 2 s threshold, then the backlog drains; no attempt fails."""
    replicas = start_replicas(
        delay=1.5,
        alert_backlog_age_seconds="2",
        forward_timeout_seconds="10",
        forward_lease_seconds="30",
    )
    replicas.send([FAILED] * 8)
    replicas.each_once(
        ("receiver.backlog.stuck", "Backlog stuck: billing"),
        ("receiver.backlog.cleared", "Backlog cleared: billing"),
    )
    assert len(replicas.sinks.billing.received) == 8
    assert replicas.logged_by_both('"delivery_state":"delivered"'), "one replica did not forward"


def test_lanes_paused_on_both_replicas_are_one_pause_and_one_resume(
    start_replicas: StartReplicas,
) -> None:
    """A destination answering 500 trips each replica's breaker (20 failures in a row
    each); once both lanes are paused it answers 200, and the first probe to succeed ends
    the pause (the other replica's lane may find nothing left to probe with: the first
    reopened lane delivers the rest)."""
    failing = threading.Event()
    failing.set()

    def answer(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return (500 if failing.is_set() else 200), {}

    replicas = start_replicas(
        answer,
        max_in_flight=8,
        # Retries enough that no delivery dies before both lanes are paused.
        forward_retry_schedule=",".join(["0.2"] * 30),
    )
    replicas.send([FAILED] * 40)
    wait_until(
        lambda: replicas.logged_by_both('"event":"destination_paused"'),
        timeout=60,
        what="both lanes paused",
    )
    failing.clear()
    replicas.each_once(
        ("receiver.destination.paused", "Destination paused: billing"),
        ("receiver.destination.resumed", "Destination resumed: billing"),
    )


def test_dead_letters_over_many_windows_are_each_counted_once_across_replicas(
    start_replicas: StartReplicas,
) -> None:
    """Windows of 1 s closing while both replicas keep counting into the next: the events'
    counts add up to every dead letter, none lost at a window's edge, none counted twice.
    One in five events is delivered, so that no lane's breaker trips; the others are
    refused at their one attempt."""
    failed, letters = b'"type":"generation.failed"', 60

    def refuse_if_failed(request: Received, _: int) -> tuple[int, dict[str, str]]:
        return (500 if failed in request.body else 200), {}

    replicas = start_replicas(
        refuse_if_failed, 0.1, alert_coalesce_seconds="1", forward_retry_schedule=ONE_ATTEMPT
    )
    replicas.send(
        ["generation.succeeded" if n % 5 == 4 else FAILED for n in range(letters + letters // 4)]
    )

    def counted() -> int:
        return sum(e["data"]["count"] for e in replicas.sinks.received(DEAD[0]))

    wait_until(lambda: counted() >= letters, timeout=60, what=lambda: f"{counted()} counted")
    time.sleep(SETTLE_SECONDS)
    events = replicas.sinks.received(DEAD[0])
    assert counted() == letters
    assert len(events) > 1, "one window: nothing was closed while both counted"
    assert len({e["id"] for e in events}) == len(events)
    assert len(stored(replicas.admin(), DEAD[0])) == len(events)
    wait_until(
        lambda: len(replicas.sinks.messages(DEAD[1])) >= len(events),
        timeout=30,
        what="a message per event",
    )
    time.sleep(SETTLE_SECONDS)
    assert len(replicas.sinks.messages(DEAD[1])) == len(events)
    assert replicas.sinks.received("receiver.destination.paused") == []
    assert replicas.logged_by_both('"delivery_state":"dead"'), "one replica did not forward"


def test_a_window_counted_by_a_replica_killed_before_it_closes_is_closed_by_the_other(
    start_replicas: StartReplicas,
) -> None:
    """The window lives in the database, not in the process that counted into it."""
    letters = 10
    replicas = start_replicas(
        always(500), 0.1, alert_coalesce_seconds="6", forward_retry_schedule=ONE_ATTEMPT
    )
    replicas.send([FAILED] * letters)
    admin = replicas.admin(1)

    def dead() -> int:
        listed = admin.admin("/deliveries", params={"state": "dead", "destination": "billing"})
        return len(listed.json()["deliveries"])

    wait_until(lambda: dead() == letters, timeout=30, what="every dead letter")
    assert replicas.sinks.received(DEAD[0]) == [], "the window closed early"
    assert replicas.logged_by_both('"delivery_state":"dead"'), "one replica did not forward"
    replicas.processes[0].stop(signal.SIGKILL)
    replicas.processes = replicas.processes[1:]
    replicas.each_once(DEAD)
    (event,) = replicas.sinks.received(DEAD[0])
    assert event["data"]["count"] == letters
