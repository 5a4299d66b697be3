"""A collector down, hanging or refusing never reaches a request: a traced `receiver serve`
and its twin with tracing off take the same webhooks in turn; the traced one answers and
stores each, stays near its twin's latency, keeps its memory flat and counts the spans it
drops. A stop does not wait on a hanging collector past the exporter's timeout, and the
spans ended just before a stop still leave. Tracing off leaves no trace anywhere."""

import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from receiver.tracing.export import SHUTDOWN_MILLIS
from tests.conftest import Sensitive
from tests.databases import stored_event_ids
from tests.helpers import (
    HTTP,
    ReceiverProcess,
    free_port,
    make_event,
    signed,
    wait_until,
)
from tests.test_metrics import ADMIN, scrape
from tests.tracing.traces import (
    DELIVER,
    INGEST,
    StartCollector,
    StartDownstream,
    StartServer,
    of_event,
)

# Enough spans (about six a webhook) to fill the small queue many times over, and for a
# queue that kept them all to grow by megabytes (about 3 KB a span, measured).
REQUESTS = 600
# Requests before the memory baseline: the first ones import and cache what the rest reuse.
WARMUP = 50
# A queue this small is full for most of a run against a collector that takes nothing.
SMALL_QUEUE = "64"
# Seconds an export may take (OTEL_EXPORTER_OTLP_TIMEOUT); the SDK's default is 10.
EXPORT_TIMEOUT = "2"
# RSS growth allowed from after-warmup to after-REQUESTS: the full queue is 64 spans (about
# 200 KB); the rest is the allocator's and the drivers' slack, measured at 3.2 MiB at most
# here, where a queue keeping every span of the run grew by 11 MiB.
MAX_RSS_GROWTH_KIB = 6 * 1024
# The traced median within this of the untraced one: a functional bound on a shared, noisy
# machine (what tracing costs is make bench's to say), far under the EXPORT_TIMEOUT that
# one request waiting on an export would add.
LATENCY_FACTOR = 3
LATENCY_SLACK_SECONDS = 0.005
# A stop gives tracing SHUTDOWN_MILLIS to export what is queued, then the process's own stop
# takes its second or two. Without that bound, with the SDK's defaults and an export
# hanging, a worker took 19 s to stop and `serve` 30 s.
MAX_STOP_SECONDS = SHUTDOWN_MILLIS / 1000 + 5
Send = Callable[[ReceiverProcess], tuple[str, float]]


def otel(endpoint: str, **overrides: str) -> dict[str, str]:
    """A traced server's variables: every span sampled, exported every 100 ms."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BSP_MAX_QUEUE_SIZE": SMALL_QUEUE,
        "OTEL_EXPORTER_OTLP_TIMEOUT": EXPORT_TIMEOUT,
        **overrides,
    }


@pytest.fixture
def start(
    tmp_path: Path,
    server_env: dict[str, str],
    new_database: Callable[[Path], str],
    sensitive: Sensitive,
) -> Iterator[StartServer]:
    """Processes of the test's own: the module's settings without its OTEL_* variables,
    plus `tracing`'s (none: tracing off), on a fresh database unless given one; each log
    scanned for leaks at the end."""
    started: list[ReceiverProcess] = []

    def start_one(
        tracing: dict[str, str], *args: str, forward_url: str, database_url: str = ""
    ) -> ReceiverProcess:
        folder = tmp_path / f"process-{len(started)}"
        folder.mkdir()
        env = {name: value for name, value in server_env.items() if not name.startswith("OTEL_")}
        env |= {
            "RECEIVER_DATABASE_URL": database_url or new_database(folder),
            "RECEIVER_FORWARD_URL": forward_url,
            **tracing,
        }
        started.append(ReceiverProcess(folder, env, args or ("serve",)).start())
        return started[-1]

    yield start_one
    for process in started:
        if process.running:
            process.stop()
        assert sensitive.found_in(process.output()) == [], "a sensitive value reached the logs"


@pytest.fixture
def send(secrets_in_use: tuple[str, str], sensitive: Sensitive) -> Send:
    """One signed webhook to the server given, answered 200: its event ID, and the seconds
    the answer took (the signing is done before the clock starts)."""

    def send_one(server: ReceiverProcess) -> tuple[str, float]:
        event = make_event()
        body, headers = signed(secrets_in_use[0], event)
        sensitive.add(headers["webhook-signature"], body.decode(), *event["data"]["result"]["urls"])
        began = time.perf_counter()
        response = HTTP.post(f"{server.url}/webhooks/rivya", content=body, headers=headers)
        took = time.perf_counter() - began
        assert response.status_code == 200, response.text
        return event["id"], took

    return send_one


def rss_kib(server: ReceiverProcess) -> int:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def dropped(server: ReceiverProcess) -> dict[str, float]:
    """receiver_trace_spans_dropped_total by reason."""
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in scrape(server.url).items()
        if name == "receiver_trace_spans_dropped_total"
    }


def stop_timed(process: ReceiverProcess) -> tuple[int, float]:
    began = time.monotonic()
    code = process.stop()
    return code, time.monotonic() - began


@pytest.fixture(params=["down", "hanging", "refusing"])
def trouble(request: pytest.FixtureRequest, own_collector: StartCollector) -> str:
    """The endpoint of a collector in trouble: nobody listening, holding every export
    until the test ends, or answering 500."""
    if request.param == "down":
        return f"http://127.0.0.1:{free_port()}"
    return own_collector(hang=True).url if request.param == "hanging" else own_collector(500).url


@pytest.mark.any_backend  # the collector's trouble, not the database's
def test_a_collector_in_trouble_never_reaches_a_request(
    trouble: str, start: StartServer, own_downstream: StartDownstream, send: Send
) -> None:
    untraced = start({}, forward_url=own_downstream().url)
    traced = start(otel(trouble), forward_url=own_downstream().url)
    sent: dict[ReceiverProcess, list[str]] = {untraced: [], traced: []}
    took: dict[ReceiverProcess, list[float]] = {untraced: [], traced: []}
    for count in range(WARMUP + REQUESTS):
        if count == WARMUP:
            baseline = rss_kib(traced)
        for server in (untraced, traced):  # in turn, so the machine's noise falls on both
            event_id, seconds = send(server)
            sent[server].append(event_id)
            took[server].append(seconds)
    grown = rss_kib(traced) - baseline

    for server, event_ids in sent.items():
        assert stored_event_ids(server.env["RECEIVER_DATABASE_URL"]) >= set(event_ids)
    traced_median, untraced_median = (statistics.median(took[s]) for s in (traced, untraced))
    assert traced_median < LATENCY_FACTOR * untraced_median + LATENCY_SLACK_SECONDS, (
        traced_median,
        untraced_median,
    )
    assert grown < MAX_RSS_GROWTH_KIB, f"RSS grew by {grown} KiB"
    wait_until(lambda: sum(dropped(traced).values()) > 0, timeout=15, what="dropped spans")


@pytest.mark.any_backend  # the collector's trouble, not the database's
def test_a_stop_does_not_wait_on_a_hanging_collector(
    own_collector: StartCollector, start: StartServer, own_downstream: StartDownstream, send: Send
) -> None:
    """Both processes that export: `serve` (stopped as the suite stops it, by SIGTERM,
    which uvicorn re-raises) and `worker` (exit 0), each with an export hanging and spans
    queued behind it, with the SDK's own queue and export timeout."""
    hanging = own_collector(hang=True)
    sink = own_downstream()
    sdk_defaults = otel(
        hanging.url, OTEL_BSP_MAX_QUEUE_SIZE="2048", OTEL_EXPORTER_OTLP_TIMEOUT="10"
    )
    server = start(sdk_defaults, "serve", "--no-forwarder", forward_url=sink.url)
    worker = start(
        sdk_defaults,
        "worker",
        forward_url=sink.url,
        database_url=server.env["RECEIVER_DATABASE_URL"],
    )
    for _ in range(2 * int(SMALL_QUEUE)):
        send(server)
    wait_until(lambda: len(sink.received) >= int(SMALL_QUEUE), timeout=30, what="deliveries")
    wait_until(lambda: hanging.exports >= 2, timeout=15, what="both exporting")
    # One more, whose spans queue behind the hanging exports (its delivery's, the worker's).
    send(server)
    wait_until(lambda: len(sink.received) > 2 * int(SMALL_QUEUE), timeout=15, what="delivery")

    code, seconds = stop_timed(worker)
    assert (code, seconds < MAX_STOP_SECONDS) == (0, True), seconds
    code, seconds = stop_timed(server)
    assert (code, seconds < MAX_STOP_SECONDS) == (-signal.SIGTERM, True), seconds


def test_spans_ended_just_before_serve_stops_reach_the_collector(
    own_collector: StartCollector, start: StartServer, own_downstream: StartDownstream, send: Send
) -> None:
    """With the SDK's default delay (5 s between exports), what a request and its
    delivery ended is still queued when SIGTERM comes: the stop exports it."""
    collector, sink = own_collector(), own_downstream()
    server = start(otel(collector.url, OTEL_BSP_SCHEDULE_DELAY="5000"), forward_url=sink.url)
    event_id, _ = send(server)
    wait_until(lambda: len(sink.received) == 1, timeout=15, what="the delivery")
    server.stop()
    collector.wait_for(INGEST, **of_event(event_id))
    collector.wait_for(DELIVER, **of_event(event_id))


def test_spans_ended_just_before_a_worker_stops_reach_the_collector(
    own_collector: StartCollector, start: StartServer, own_downstream: StartDownstream, send: Send
) -> None:
    collector, sink = own_collector(), own_downstream()
    server = start(otel(collector.url), "serve", "--no-forwarder", forward_url=sink.url)
    worker = start(
        otel(collector.url, OTEL_BSP_SCHEDULE_DELAY="5000"),
        "worker",
        forward_url=sink.url,
        database_url=server.env["RECEIVER_DATABASE_URL"],
    )
    event_id, _ = send(server)
    wait_until(lambda: len(sink.received) == 1, timeout=15, what="the delivery")
    assert worker.stop() == 0
    collector.wait_for(DELIVER, **of_event(event_id))


def test_with_tracing_off_no_drop_metric_and_no_traceparent_is_sent(
    start: StartServer, own_downstream: StartDownstream, send: Send
) -> None:
    sink = own_downstream()
    server = start({}, forward_url=sink.url)
    for _ in range(3):
        send(server)
    wait_until(lambda: len(sink.received) == 3, timeout=15, what="3 deliveries")
    metrics = HTTP.get(f"{server.url}/metrics", headers=ADMIN)
    assert metrics.status_code == 200
    assert "receiver_trace_spans_dropped" not in metrics.text
    assert [name for request in sink.received for name in request.headers if "trace" in name] == []
