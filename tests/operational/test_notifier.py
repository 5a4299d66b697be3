"""The notifier through Apprise's `json://` to a real loopback endpoint: the message's text,
retries then `failed`, a hanging endpoint holding nothing but its own thread, a full queue
dropping and counting, two URLs counted apart, a bounded stop; and no URL or token in any
log line or message."""

import asyncio
import io
import json
import logging
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from prometheus_client import generate_latest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.logs import configure_logging
from receiver.metrics import Metrics
from receiver.operational.events import OperationalEvent, OperationalType
from receiver.operational.messages import Message
from receiver.operational.notifier import (
    BUSY,
    QUEUE_SIZE,
    Notifier,
    NotifyResult,
    Pacing,
    notifications_table,
)
from receiver.store.database import create_engine, transaction, upgrade_schema
from receiver.store.notifications import last_notifications
from tests.notify_endpoint import ERROR, HANG, HANG_SECONDS, NotifyEndpoint

pytestmark = pytest.mark.anyio

SINCE = datetime(2026, 12, 1, 22, 4, 5, tzinfo=UTC)
# Quick tries for the tests; the defaults (1 s, 4 s, 60 s, 5 s) are the service's.
QUICK = Pacing(retry_delays=(0.05, 0.05), attempt_seconds=5.0, stop_seconds=2.0)


def dead_letters(count: int = 3, destination: str = "billing") -> OperationalEvent:
    return OperationalEvent(
        type=OperationalType.DELIVERY_DEAD,
        condition=f"dead:{destination}",
        since=SINCE,
        at=SINCE + timedelta(minutes=5),
        data={
            "destination": destination,
            "count": count,
            "first": [
                {"event_id": f"evt_{n}", "event_type": "generation.failed"} for n in range(2)
            ],
        },
    )


@pytest.fixture
def endpoints() -> Iterator[list[NotifyEndpoint]]:
    made: list[NotifyEndpoint] = []
    yield made
    for endpoint in made:
        endpoint.stop()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The service's real log chain at debug, Apprise's lines included."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    yield stream
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def events_of(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_no_secret(text: str, *endpoints: NotifyEndpoint) -> None:
    for endpoint in endpoints:
        for secret in (*endpoint.secrets(), endpoint.url(), f":{endpoint.port}/"):
            assert secret not in text


def new_endpoint(endpoints: list[NotifyEndpoint], mode: str = "ok") -> NotifyEndpoint:
    endpoints.append(NotifyEndpoint(mode))
    return endpoints[-1]


async def test_an_event_becomes_one_message_naming_the_destination_and_count(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    endpoint = new_endpoint(endpoints)
    results: list[str] = []
    recorded: list[tuple[str, Message, int, int]] = []

    async def record(
        event: OperationalEvent, message: Message, delivered: int, failed: int
    ) -> None:
        recorded.append((event.event_id, message, delivered, failed))

    urls = [SecretStr(endpoint.url())]
    async with Notifier(urls, "https://rx.example", results.append, record, QUICK) as notifier:
        notifier.send(dead_letters())
        (sent,) = await asyncio.to_thread(endpoint.wait_for, 1)
    assert sent.title == "Dead letters: billing"
    assert "3 deliveries to billing gave up" in sent.message
    assert "evt_0, evt_1" in sent.message
    assert "Since 2026-12-01 22:04:05 (UTC)." in sent.message
    assert "receiver deliveries list --state dead --destination billing" in sent.message
    assert "https://rx.example/console/deliveries?state=dead&destination=billing" in sent.message
    assert sent.type == "failure"
    assert sent.headers["x-token"] == endpoint.header_token  # the URL's header reached it
    assert results == ["sent"]
    assert [(r[0], r[2], r[3]) for r in recorded] == [(dead_letters().event_id, 1, 0)]
    (line,) = [e for e in events_of(json_logs) if e["event"] == "notification_sent"]
    assert line["event_id"] == dead_letters().event_id
    assert line["what"] == "URL 1 (json)"
    assert_no_secret(json_logs.getvalue() + sent.message + sent.title, endpoint)


async def test_a_refusing_url_is_tried_the_set_number_of_times_then_counted_failed(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    endpoint = new_endpoint(endpoints, ERROR)
    results: list[str] = []
    recorded: list[tuple[int, int]] = []

    async def record(_: OperationalEvent, __: Message, delivered: int, failed: int) -> None:
        recorded.append((delivered, failed))

    async with Notifier([SecretStr(endpoint.url())], None, results.append, record, QUICK) as n:
        n.send(dead_letters())
    assert endpoint.requests == 1 + len(QUICK.retry_delays)
    assert results == ["failed"]
    assert recorded == [(0, 1)]
    (line,) = [e for e in events_of(json_logs) if e["event"] == "notification_failed"]
    assert (line["attempt"], line["reason"], line["what"]) == (3, "NotDelivered", "URL 1 (json)")
    # Apprise's own lines (they quote the host and the answer) keep their level alone.
    assert any(e["event"] == "apprise_warning" for e in events_of(json_logs))
    assert_no_secret(json_logs.getvalue(), endpoint)


async def test_a_hanging_url_holds_neither_send_nor_the_loop(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    endpoint = new_endpoint(endpoints, HANG)
    results: list[str] = []
    ticks = 0

    async def probe() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    url = SecretStr(endpoint.url(rto="1"))
    pacing = Pacing(retry_delays=(), attempt_seconds=5.0, stop_seconds=5.0)
    async with Notifier([url], None, results.append, pacing=pacing) as notifier:
        prober = asyncio.create_task(probe())
        notifier.send(dead_letters())  # returns at once: it only queues
        await asyncio.to_thread(endpoint.wait_for_requests, 1)
        at_hang = ticks
        await asyncio.sleep(0.5)  # the endpoint holds the request all along
        assert ticks > at_hang, "the loop stopped while the endpoint hung"
    prober.cancel()
    assert results == ["failed"]  # the URL's own 1 s read timeout ended the try
    assert_no_secret(json_logs.getvalue(), endpoint)


async def test_a_try_longer_than_its_bound_counts_as_failed() -> None:
    endpoint = NotifyEndpoint(HANG)
    try:
        results: list[str] = []
        pacing = Pacing(retry_delays=(), attempt_seconds=0.5, stop_seconds=5.0)
        # The URL's own timeouts (60 s) would hold the try; the notifier's bound does not.
        url = SecretStr(endpoint.url(rto="60"))
        async with Notifier([url], None, results.append, pacing=pacing) as notifier:
            assert await notifier.test() == [NotifyResult(1, "json", False, "TimeoutError")]
    finally:
        endpoint.stop()


async def test_a_full_queue_drops_and_counts_each_message_beyond_it(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    endpoint = new_endpoint(endpoints, HANG)
    results: list[str] = []
    pacing = Pacing(retry_delays=(), attempt_seconds=5.0, stop_seconds=0.1)
    async with Notifier([SecretStr(endpoint.url())], None, results.append, pacing=pacing) as n:
        n.send(dead_letters())  # taken by the sending task, which hangs on it
        await asyncio.to_thread(endpoint.wait_for_requests, 1)
        for _ in range(QUEUE_SIZE + 2):
            n.send(dead_letters())
        assert results == ["dropped", "dropped"]
    # The stop dropped the one in flight and the QUEUE_SIZE waiting.
    assert results.count("dropped") == 2 + 1 + QUEUE_SIZE
    reasons = [
        e.get("reason") for e in events_of(json_logs) if e["event"] == "notification_dropped"
    ]
    assert reasons.count("queue_full") == 2
    assert_no_secret(json_logs.getvalue(), endpoint)


async def test_two_urls_are_counted_apart(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    good, bad = new_endpoint(endpoints), new_endpoint(endpoints, ERROR)
    results: list[str] = []
    recorded: list[tuple[int, int]] = []

    async def record(_: OperationalEvent, __: Message, delivered: int, failed: int) -> None:
        recorded.append((delivered, failed))

    urls = [SecretStr(bad.url()), SecretStr(good.url())]
    async with Notifier(urls, None, results.append, record, QUICK) as notifier:
        notifier.send(dead_letters())
    assert sorted(results) == ["failed", "sent"]
    assert recorded == [(1, 1)]
    assert len(good.received) == 1
    lines = {e["event"]: e["what"] for e in events_of(json_logs) if "what" in e}
    assert lines == {"notification_sent": "URL 2 (json)", "notification_failed": "URL 1 (json)"}
    assert_no_secret(json_logs.getvalue(), good, bad)


async def test_the_stop_with_a_hanging_url_returns_within_its_bound(
    endpoints: list[NotifyEndpoint],
) -> None:
    endpoint = new_endpoint(endpoints, HANG)
    results: list[str] = []
    pacing = Pacing(retry_delays=(), attempt_seconds=60.0, stop_seconds=0.5)
    notifier = Notifier([SecretStr(endpoint.url(rto="60"))], None, results.append, pacing=pacing)
    async with notifier:
        notifier.send(dead_letters())
        notifier.send(dead_letters(destination="archive"))
        await asyncio.to_thread(endpoint.wait_for_requests, 1)
        stopping = time.monotonic()
    # Bounded by the stop's wait, not by the hanging try (60 s): 5 s is slack for a busy
    # machine, not a figure of speed.
    assert time.monotonic() - stopping < 5.0
    assert results == ["dropped", "dropped"]


async def test_a_record_callback_that_raises_stops_nothing(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    endpoint = new_endpoint(endpoints)
    results: list[str] = []

    async def record(*_: object) -> None:
        raise RuntimeError("database gone")

    async with Notifier([SecretStr(endpoint.url())], None, results.append, record, QUICK) as n:
        n.send(dead_letters())
        n.send(dead_letters(destination="archive"))
    assert results == ["sent", "sent"]
    failures = [e for e in events_of(json_logs) if e["event"] == "notification_record_failed"]
    assert [f["error_class"] for f in failures] == ["RuntimeError", "RuntimeError"]


async def test_an_event_whose_message_cannot_be_written_is_logged_and_the_next_is_sent(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    endpoint = new_endpoint(endpoints)
    results: list[str] = []
    broken = OperationalEvent(OperationalType.CREDITS_LOW, "credits", SINCE, SINCE, {})
    async with Notifier([SecretStr(endpoint.url())], None, results.append, pacing=QUICK) as n:
        n.send(broken)
        n.send(dead_letters())
    assert results == ["sent"]
    assert [
        e["error_class"] for e in events_of(json_logs) if e["event"] == "notification_unsent"
    ] == ["KeyError"]


def test_the_metric_has_each_result_from_the_start_and_counts_the_notifiers_results() -> None:
    metrics = Metrics(refresh_seconds=15.0)
    metrics.observe_notification("failed")
    text = generate_latest(metrics.registry).decode()
    assert 'receiver_notifications_total{result="sent"} 0.0' in text
    assert 'receiver_notifications_total{result="failed"} 1.0' in text
    assert 'receiver_notifications_total{result="dropped"} 0.0' in text


EXIT_WHILE_HANGING = """
import asyncio, sys
from pydantic import SecretStr
from receiver.operational.notifier import Notifier, Pacing
from tests.operational.test_notifier import dead_letters

async def main() -> None:
    pacing = Pacing(retry_delays=(), attempt_seconds=0.5, stop_seconds=0.5)
    async with Notifier([SecretStr(sys.argv[1])], None, print, pacing=pacing) as notifier:
        notifier.send(dead_letters())
        await asyncio.sleep(1.0)

asyncio.run(main())
"""


def test_the_process_exits_while_a_url_hangs(endpoints: list[NotifyEndpoint]) -> None:
    """Apprise's own thread pool is joined at exit: a try must not run in it."""
    endpoint = new_endpoint(endpoints, HANG)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WHILE_HANGING, endpoint.url(rto="60")],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS * 2,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout.splitlines()  # the try's bound, then the exit
    # The endpoint holds the request for HANG_SECONDS; the process did not wait for it.
    assert time.monotonic() - started < HANG_SECONDS / 2


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(new_database(tmp_path), 10)
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()


async def test_each_message_is_recorded_for_the_console_with_how_many_urls_took_it(
    endpoints: list[NotifyEndpoint], engine: AsyncEngine
) -> None:
    good, bad = new_endpoint(endpoints), new_endpoint(endpoints, ERROR)
    urls = [SecretStr(good.url()), SecretStr(bad.url())]
    record = notifications_table(engine)
    async with Notifier(urls, None, lambda _: None, record, QUICK) as notifier:
        notifier.send(dead_letters())
    async with transaction(engine) as connection:
        (row,) = await last_notifications(connection, 10)
    assert (row["event_id"], row["type"], row["title"]) == (
        dead_letters().event_id,
        "receiver.delivery.dead",
        "Dead letters: billing",
    )
    assert (row["delivered"], row["failed"]) == (1, 1)


class TrickleEndpoint:
    """Answers 200 with a long Content-Length, then a byte every TRICKLE_SECONDS (each inside
    Apprise's 4 s read timeout, so no socket timeout ends the try) until `finish()`, which
    sends the rest at once."""

    TRICKLE_SECONDS = 0.2
    LENGTH = 100_000

    def __init__(self) -> None:
        self.connections = 0
        self.finished = threading.Event()
        endpoint = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                endpoint.connections += 1
                length = 0
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.rfile.read(length)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {endpoint.LENGTH}\r\n\r\n"
                self.wfile.write(head.encode())
                sent = 0
                while not endpoint.finished.wait(endpoint.TRICKLE_SECONDS):
                    self.wfile.write(b" ")
                    sent += 1
                self.wfile.write(b" " * (endpoint.LENGTH - sent))

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.finished.set()
        self._server.shutdown()
        self._server.server_close()


def live_notify_threads(before: set[threading.Thread]) -> int:
    return sum(t.name == "notify" and t not in before for t in threading.enumerate())


async def test_a_trickling_url_holds_one_thread_whatever_the_number_of_messages() -> None:
    """A service answering a byte at a time outlives each try's bound: each try's thread
    lived on, one more per try, without end. A URL whose last try still runs fails at once
    (Busy, counted failed), and is tried again once that thread has returned."""
    endpoint = TrickleEndpoint()
    before = set(threading.enumerate())
    results: list[str] = []
    most = 0
    pacing = Pacing(retry_delays=(0.05,), attempt_seconds=0.3, stop_seconds=5.0)
    try:
        async with Notifier([SecretStr(endpoint.url())], None, results.append, pacing=pacing) as n:
            for number in range(5):
                n.send(dead_letters(destination=f"d{number}"))
            while len(results) < 5:
                most = max(most, live_notify_threads(before))
                await asyncio.sleep(0.05)
            most = max(most, live_notify_threads(before))
            assert most == 1
            # Every try after the first found the first's thread still trickling.
            assert endpoint.connections == 1
            assert await n.test() == [NotifyResult(1, "json", False, BUSY)]
            endpoint.finished.set()  # the answer completes: that thread returns
            await asyncio.to_thread(wait_for_no_notify_threads, before)
            assert await n.test() == [NotifyResult(1, "json", True)]
    finally:
        endpoint.stop()
    assert results == ["failed"] * 5


def wait_for_no_notify_threads(before: set[threading.Thread], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while live_notify_threads(before) and time.monotonic() < deadline:
        time.sleep(0.02)


async def test_without_on_result_messages_are_sent_logged_and_recorded_uncounted(
    endpoints: list[NotifyEndpoint], json_logs: io.StringIO
) -> None:
    """The worker serves no /metrics: it passes no `on_result`, and nothing else changes."""
    endpoint = new_endpoint(endpoints)
    recorded: list[tuple[int, int]] = []

    async def record(_: OperationalEvent, __: Message, delivered: int, failed: int) -> None:
        recorded.append((delivered, failed))

    async with Notifier([SecretStr(endpoint.url())], None, record=record, pacing=QUICK) as n:
        n.send(dead_letters())
    assert len(endpoint.received) == 1
    assert recorded == [(1, 0)]
    assert [e["event"] for e in events_of(json_logs)].count("notification_sent") == 1
