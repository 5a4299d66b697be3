"""A notification endpoint that hangs or answers 500 slows nothing: two `receiver serve`
processes, one told of its operational events at a healthy endpoint and its twin at one in
trouble, each raising many of them (destinations refusing everything at its one attempt:
dead letters in short windows, paused lanes), take the same webhooks in turn; the twin
answers each 2xx and delivers each as fast as the other, within the suite's bound. A stop
(SIGTERM) with the endpoint hanging is prompt."""

import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.operational.notifier import STOP_SECONDS
from tests.conftest import Rivya, Sensitive
from tests.helpers import (
    ONE_ATTEMPT,
    Downstream,
    ReceiverProcess,
    always,
    make_event,
    only,
    wait_until,
    write_destinations,
)
from tests.notify_endpoint import ERROR, HANG, NotifyEndpoint
from tests.test_metrics import scrape
from tests.tracing.test_collector_trouble import LATENCY_FACTOR, LATENCY_SLACK_SECONDS

# In turn to each twin: enough for a median that the machine's noise falls on alike.
REQUESTS = 300
# Destinations answering 500 to everything, with one attempt a delivery (not 410, which
# would disable each after its first dead letter): each raises dead-letter events, window
# after window, and a pause; enough of them that the notifier is sent an event every second
# or so.
GONE = 8
# Short windows, so dead letters make events all along the run, not one at its end.
COALESCE_SECONDS = "0.5"
CHECK_SECONDS = "0.2"
# Operational events each twin must have raised for the comparison to mean anything: more
# than one per gone destination (the pause, and the first window).
MIN_EVENTS = 2 * GONE
# A forwarder on SQLite is woken by the writer, so a delivery follows its ingest by about
# 15 ms here (both twins alike, measured); the slack covers a busy machine's batch or two,
# far under the 4 s per read that one delivery waiting on a hanging try would add.
FORWARD_SLACK_SECONDS = 0.1
# The notifier's stop waits STOP_SECONDS for what it is sending, then the process's own
# stop takes its second or two.
MAX_STOP_SECONDS = STOP_SECONDS + 5


def told(folder: Path, endpoint: NotifyEndpoint, *tables: dict[str, Any]) -> dict[str, str]:
    """Settings of a process forwarding to `tables` (one attempt a delivery), telling
    `endpoint` of its events."""
    return {
        **only(write_destinations(folder / "destinations.toml", *tables)),
        "alert_coalesce_seconds": COALESCE_SECONDS,
        "alert_check_seconds": CHECK_SECONDS,
        "notify_urls": endpoint.url(),
        "forward_retry_schedule": ONE_ATTEMPT,
    }


class Twin:
    """One `serve` on a database of its own, with `main` (its healthy sink), GONE
    destinations answering 500, and the notification endpoint given."""

    def __init__(
        self,
        start_server: Callable[..., ReceiverProcess],
        new_database: Callable[[Path], str],
        folder: Path,
        main: Downstream,
        gone: Downstream,
        new_secrets: Callable[[], str],
        endpoint: NotifyEndpoint,
    ) -> None:
        folder.mkdir()
        tables: list[dict[str, Any]] = [
            {"name": "main", "url": main.url, "signing_secrets": new_secrets()},
            *(
                {"name": f"gone-{n}", "url": gone.url, "signing_secrets": new_secrets()}
                for n in range(GONE)
            ),
        ]
        self.main = main
        self.server = start_server(
            **told(folder, endpoint, *tables), database_url=new_database(folder)
        )
        self.ingest: list[float] = []
        self.sent_at: dict[str, float] = {}

    def send(self, secret: str, sensitive: Sensitive) -> None:
        event = make_event()
        began = time.monotonic()
        response = Rivya(self.server, secret, sensitive).send(event)
        self.ingest.append(time.monotonic() - began)
        assert response.status_code == 200, response.text
        self.sent_at[event["id"]] = began

    def all_delivered(self) -> bool:
        return set(self.main.ids()) >= set(self.sent_at)

    def forwarding(self) -> list[float]:
        """Seconds from each webhook's sending to its delivery to `main`."""
        first: dict[str, float] = {}
        for request in self.main.received:
            first.setdefault(request.headers["webhook-id"], request.at)
        return [first[event_id] - sent for event_id, sent in self.sent_at.items()]

    def metric(self, name: str, **labels: str) -> float:
        return sum(
            value
            for (sample, labelled), value in scrape(self.server.url).items()
            if sample == name and labels.items() <= dict(labelled).items()
        )


@pytest.fixture
def endpoints(sensitive: Sensitive) -> Iterator[Callable[[str], NotifyEndpoint]]:
    made: list[NotifyEndpoint] = []

    def new(mode: str) -> NotifyEndpoint:
        made.append(NotifyEndpoint(mode))
        sensitive.add(*made[-1].secrets(), made[-1].url())
        return made[-1]

    yield new
    for endpoint in made:
        endpoint.stop()


@pytest.mark.any_backend  # the notification endpoint's trouble, not the database's
@pytest.mark.parametrize("trouble", [HANG, ERROR])
def test_a_notification_endpoint_in_trouble_slows_neither_ingest_nor_forwarding(
    trouble: str,
    start_server: Callable[..., ReceiverProcess],
    new_database: Callable[[Path], str],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    endpoints: Callable[[str], NotifyEndpoint],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    gone = own_downstream(always(500))
    twins = {
        name: Twin(
            start_server,
            new_database,
            tmp_path / name,
            own_downstream(),
            gone,
            new_secrets,
            endpoints(mode),
        )
        for name, mode in (("calm", "ok"), ("troubled", trouble))
    }
    calm, troubled = twins["calm"], twins["troubled"]
    for _ in range(REQUESTS):
        for twin in (calm, troubled):  # in turn, so the machine's noise falls on both
            twin.send(secrets_in_use[0], sensitive)

    for twin in (calm, troubled):
        wait_until(twin.all_delivered, timeout=60, what="every delivery to main")
        events = twin.metric("receiver_operational_events_total")
        assert events >= MIN_EVENTS, events
    ingest = {name: statistics.median(twin.ingest) for name, twin in twins.items()}
    assert ingest["troubled"] < LATENCY_FACTOR * ingest["calm"] + LATENCY_SLACK_SECONDS, ingest
    forwarding = {name: statistics.median(twin.forwarding()) for name, twin in twins.items()}
    assert forwarding["troubled"] < LATENCY_FACTOR * forwarding["calm"] + FORWARD_SLACK_SECONDS, (
        forwarding
    )
    # The trouble was real: the calm twin's messages went out, the other's did not.
    assert calm.metric("receiver_notifications_total", result="sent") > 0
    wait_until(
        lambda: troubled.metric("receiver_notifications_total", result="failed") > 0,
        timeout=60,
        what="a failed notification",
    )
    assert troubled.metric("receiver_notifications_total", result="sent") == 0

    began = time.monotonic()
    code = troubled.server.stop()
    took = time.monotonic() - began
    assert (code, took < MAX_STOP_SECONDS) == (-signal.SIGTERM, True), took


@pytest.mark.any_backend  # the notification endpoint's trouble, not the database's
def test_a_worker_stops_promptly_while_the_endpoint_hangs(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    endpoints: Callable[[str], NotifyEndpoint],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    """`receiver worker` raises the events (its forwarder's dead letters), so its notifier
    is the one holding a try on the hanging endpoint when SIGTERM comes."""
    hanging = endpoints(HANG)
    gone = own_downstream(always(500))
    settings = told(
        tmp_path, hanging, {"name": "gone", "url": gone.url, "signing_secrets": new_secrets()}
    )
    server = start_server("serve", "--no-forwarder", **settings)
    worker = start_server("worker", **settings)
    assert Rivya(server, secrets_in_use[0], sensitive).send(make_event()).status_code == 200
    hanging.wait_for_requests(1, timeout=30)

    began = time.monotonic()
    code = worker.stop()
    took = time.monotonic() - began
    assert (code, took < MAX_STOP_SECONDS) == (0, True), took
