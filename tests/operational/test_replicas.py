"""Two `receiver serve` replicas on one PostgreSQL database, each forwarding, each checking,
each with the same notification URL, raise each condition once and end it once: the
subscribed sink is sent one event of each type, the events table holds one, and the
notification endpoint is sent one message. Which replica raises it is decided in the
database (the `conditions` table); each replica sees the condition on its own."""

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Rivya, Sensitive
from tests.helpers import (
    Downstream,
    Received,
    ReceiverProcess,
    make_event,
    only,
    wait_until,
    write_destinations,
)
from tests.notify_endpoint import NotifyEndpoint
from tests.operational.observed import messages, received, stored, subscriber

pytestmark = pytest.mark.postgresql_only

CHECK_SECONDS = "0.2"
# Checks that would raise or end a condition a second time have had time to, many times.
SETTLE_SECONDS = 10 * float(CHECK_SECONDS)
StartServer = Callable[..., ReceiverProcess]


class Replicas:
    """Two replicas on the test's database, with `billing` (the test's sink) and the
    subscribed `ops`, and the one notification endpoint."""

    def __init__(
        self,
        start_server: StartServer,
        folder: Path,
        billing: dict[str, Any],
        ops: Downstream,
        ops_secret: str,
        endpoint: NotifyEndpoint,
        **overrides: str,
    ) -> None:
        file = write_destinations(
            folder / "destinations.toml", billing, subscriber(ops.url, ops_secret)
        )
        self.processes = [
            start_server(
                **only(file),
                alert_check_seconds=CHECK_SECONDS,
                notify_urls=endpoint.url(),
                **overrides,
            )
            for _ in range(2)
        ]
        self.ops, self.ops_secret, self.endpoint = ops, ops_secret, endpoint

    def send(self, secret: str, sensitive: Sensitive, count: int) -> None:
        """`count` events, to each replica in turn."""
        for n in range(count):
            sender = Rivya(self.processes[n % 2], secret, sensitive)
            assert sender.send(make_event(event_type="generation.failed")).status_code == 200

    def each_once(self, secret: str, sensitive: Sensitive, *kinds: tuple[str, str]) -> None:
        """Each (type, message title) once: at the sink, in the events table, at the
        endpoint; and logged as raised by one replica alone."""
        for event_type, title in kinds:
            self.wait_for(event_type, title)
        time.sleep(SETTLE_SECONDS)
        admin = Rivya(self.processes[0], secret, sensitive)
        for event_type, title in kinds:
            (event,) = received(self.ops, self.ops_secret, event_type)
            assert [e["payload"] for e in stored(admin, event_type)] == [event]
            assert len(messages(self.endpoint, title)) == 1, title
            raised = [
                line
                for process in self.processes
                for line in map(orjson.loads, process.output().splitlines())
                if (line["event"], line.get("event_id")) == ("operational_event", event["id"])
            ]
            assert len(raised) == 1, event_type

    def wait_for(self, event_type: str, title: str) -> None:
        wait_until(
            lambda: received(self.ops, self.ops_secret, event_type) != [],
            timeout=60,
            what=event_type,
        )
        wait_until(lambda: messages(self.endpoint, title) != [], timeout=30, what=title)

    def logged_by_both(self, text: str) -> bool:
        return all(text in process.output() for process in self.processes)


@pytest.fixture
def endpoint(sensitive: Sensitive) -> Iterator[NotifyEndpoint]:
    made = NotifyEndpoint()
    sensitive.add(*made.secrets(), made.url())
    yield made
    made.stop()


def test_dead_letters_recorded_by_both_replicas_are_one_event_counting_them_all(
    start_server: StartServer,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    endpoint: NotifyEndpoint,
    tmp_path: Path,
) -> None:
    """A lane one wide and a slow 410 on each replica: both claim, both record dead
    letters (fewer than the breaker's 20 in a row), into one window."""
    letters = 16
    billing, ops, ops_secret = (
        own_downstream(lambda _, __: (410, {}), 0.2),
        own_downstream(),
        new_secrets(),
    )
    table = {
        "name": "billing",
        "url": billing.url,
        "signing_secrets": new_secrets(),
        "max_in_flight": 1,
    }
    replicas = Replicas(
        start_server, tmp_path, table, ops, ops_secret, endpoint, alert_coalesce_seconds="10"
    )
    replicas.send(secrets_in_use[0], sensitive, letters)
    replicas.each_once(
        secrets_in_use[0], sensitive, ("receiver.delivery.dead", "Dead letters: billing")
    )
    (event,) = received(ops, ops_secret, "receiver.delivery.dead")
    assert (event["data"]["destination"], event["data"]["count"]) == ("billing", letters)
    assert replicas.logged_by_both('"delivery_state":"dead"'), "one replica did not forward"
    (message,) = messages(endpoint, "Dead letters: billing")
    assert f"{letters} deliveries to billing gave up (dead)." in message.message


def test_a_backlog_both_replicas_see_is_stuck_once_and_cleared_once(
    start_server: StartServer,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    endpoint: NotifyEndpoint,
    tmp_path: Path,
) -> None:
    """A slow but healthy destination (one at a time, 1.5 s each): its oldest pending
    delivery passes the 2 s threshold, then the backlog drains; no attempt fails."""
    billing, ops, ops_secret = own_downstream(delay=1.5), own_downstream(), new_secrets()
    table = {
        "name": "billing",
        "url": billing.url,
        "signing_secrets": new_secrets(),
        "max_in_flight": 1,
    }
    replicas = Replicas(
        start_server,
        tmp_path,
        table,
        ops,
        ops_secret,
        endpoint,
        alert_backlog_age_seconds="2",
        forward_timeout_seconds="10",
        forward_lease_seconds="30",
    )
    replicas.send(secrets_in_use[0], sensitive, 8)
    replicas.each_once(
        secrets_in_use[0],
        sensitive,
        ("receiver.backlog.stuck", "Backlog stuck: billing"),
        ("receiver.backlog.cleared", "Backlog cleared: billing"),
    )
    assert len(billing.received) == 8
    assert replicas.logged_by_both('"delivery_state":"delivered"'), "one replica did not forward"


def test_lanes_paused_on_both_replicas_are_one_pause_and_one_resume(
    start_server: StartServer,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    endpoint: NotifyEndpoint,
    tmp_path: Path,
) -> None:
    """A destination answering 500 trips each replica's breaker (20 failures in a row
    each); once both lanes are paused it answers 200, and each replica's probe reopens its
    own lane."""
    failing = threading.Event()
    failing.set()

    def answer(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return (500 if failing.is_set() else 200), {}

    billing, ops, ops_secret = own_downstream(answer), own_downstream(), new_secrets()
    table = {
        "name": "billing",
        "url": billing.url,
        "signing_secrets": new_secrets(),
        "max_in_flight": 8,
    }
    replicas = Replicas(
        start_server,
        tmp_path,
        table,
        ops,
        ops_secret,
        endpoint,
        # Retries enough that no delivery dies before both lanes are paused.
        forward_retry_schedule=",".join(["0.2"] * 30),
    )
    replicas.send(secrets_in_use[0], sensitive, 40)
    wait_until(
        lambda: replicas.logged_by_both('"event":"destination_paused"'),
        timeout=60,
        what="both lanes paused",
    )
    failing.clear()
    wait_until(
        lambda: replicas.logged_by_both('"event":"destination_resumed"'),
        timeout=90,
        what="both lanes resumed",
    )
    replicas.each_once(
        secrets_in_use[0],
        sensitive,
        ("receiver.destination.paused", "Destination paused: billing"),
        ("receiver.destination.resumed", "Destination resumed: billing"),
    )


def test_dead_letters_over_many_windows_are_each_counted_once_across_replicas(
    start_server: StartServer,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    endpoint: NotifyEndpoint,
    tmp_path: Path,
) -> None:
    """Windows of 1 s closing while both replicas keep counting into the next: the events'
    counts add up to every dead letter, none lost at a window's edge, none counted twice.
    One in five events is delivered, so that no lane's breaker trips."""
    failed, letters = b'"type":"generation.failed"', 60

    def gone_if_failed(request: Received, _: int) -> tuple[int, dict[str, str]]:
        return (410 if failed in request.body else 200), {}

    billing, ops, ops_secret = own_downstream(gone_if_failed, 0.1), own_downstream(), new_secrets()
    table = {
        "name": "billing",
        "url": billing.url,
        "signing_secrets": new_secrets(),
        "max_in_flight": 1,
    }
    replicas = Replicas(
        start_server, tmp_path, table, ops, ops_secret, endpoint, alert_coalesce_seconds="1"
    )
    for n in range(letters + letters // 4):
        event_type = "generation.succeeded" if n % 5 == 4 else "generation.failed"
        sender = Rivya(replicas.processes[n % 2], secrets_in_use[0], sensitive)
        assert sender.send(make_event(event_type=event_type)).status_code == 200

    def counted() -> int:
        return sum(e["data"]["count"] for e in received(ops, ops_secret, "receiver.delivery.dead"))

    wait_until(lambda: counted() >= letters, timeout=60, what=lambda: f"{counted()} counted")
    time.sleep(SETTLE_SECONDS)
    events = received(ops, ops_secret, "receiver.delivery.dead")
    assert counted() == letters
    assert len(events) > 1, "one window: nothing was closed while both counted"
    assert len({e["id"] for e in events}) == len(events)
    admin = Rivya(replicas.processes[0], secrets_in_use[0], sensitive)
    assert len(stored(admin, "receiver.delivery.dead")) == len(events)
    wait_until(
        lambda: len(messages(endpoint, "Dead letters: billing")) >= len(events),
        timeout=30,
        what="a message per event",
    )
    time.sleep(SETTLE_SECONDS)
    assert len(messages(endpoint, "Dead letters: billing")) == len(events)
    assert received(ops, ops_secret, "receiver.destination.paused") == []
    assert replicas.logged_by_both('"delivery_state":"dead"'), "one replica did not forward"


def test_a_window_counted_by_a_replica_killed_before_it_closes_is_closed_by_the_other(
    start_server: StartServer,
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    endpoint: NotifyEndpoint,
    tmp_path: Path,
) -> None:
    """The window lives in the database, not in the process that counted into it."""
    letters = 10
    billing, ops, ops_secret = (
        own_downstream(lambda _, __: (410, {}), 0.1),
        own_downstream(),
        new_secrets(),
    )
    table = {
        "name": "billing",
        "url": billing.url,
        "signing_secrets": new_secrets(),
        "max_in_flight": 1,
    }
    replicas = Replicas(
        start_server, tmp_path, table, ops, ops_secret, endpoint, alert_coalesce_seconds="6"
    )
    replicas.send(secrets_in_use[0], sensitive, letters)
    admin = Rivya(replicas.processes[1], secrets_in_use[0], sensitive)

    def dead() -> int:
        listed = admin.admin("/deliveries", params={"state": "dead", "destination": "billing"})
        return len(listed.json()["deliveries"])

    wait_until(lambda: dead() == letters, timeout=30, what="every dead letter")
    assert received(ops, ops_secret, "receiver.delivery.dead") == [], "the window closed early"
    assert replicas.logged_by_both('"delivery_state":"dead"'), "one replica did not forward"
    replicas.processes[0].stop(signal.SIGKILL)
    replicas.processes = replicas.processes[1:]
    replicas.each_once(
        secrets_in_use[0], sensitive, ("receiver.delivery.dead", "Dead letters: billing")
    )
    (event,) = received(ops, ops_secret, "receiver.delivery.dead")
    assert event["data"]["count"] == letters
