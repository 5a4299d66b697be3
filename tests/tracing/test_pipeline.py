"""The tracing pipeline at its edges: what the OTEL_* variables turn on and refuse, what
leaves the process of a failing span, how drops are counted, and the W3C carriers."""

import asyncio
import gzip
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.span import TraceState
from starlette.types import Message, Receive, Scope, Send
from structlog.testing import capture_logs

from bench.tracing import TraceSink
from receiver.exceptions import SettingsError
from receiver.forward.spans import attempt_span
from receiver.store.deliveries import ClaimedDelivery
from receiver.tracing.carriers import MAX_TRACESTATE_CHARS, Carrier, carrier_of, context_of
from receiver.tracing.export import (
    REPORT_SECONDS,
    SHUTDOWN_MILLIS,
    CountingBatchProcessor,
    CountingExporter,
    DroppedSpans,
    scrubbed,
)
from receiver.tracing.http import TraceRequests
from receiver.tracing.pipeline import Tracing, start_tracing
from receiver.tracing.variables import (
    LIMIT_VARIABLES,
    MAX_ATTRIBUTE_CHARS,
    MAX_LINKS,
    read_variables,
    traces_endpoint,
)
from tests.helpers import destination, free_port, run_cli, wait_until
from tests.otlp_collector import Collector


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector of the test's own (these tests register no secrets to scan for)."""
    found = Collector()
    yield found
    found.stop()


def exported_through(environ: dict[str, str], collector: Collector) -> list[str]:
    """The names of the spans `collector` got from a pipeline that `environ` started."""
    tracing = start_tracing(environ, trust_incoming=False)
    assert tracing is not None
    with tracing.tracer.start_as_current_span("probe"):
        pass
    tracing.shutdown()
    return [span.name for span in collector.spans()]


def test_no_endpoint_is_no_pipeline() -> None:
    assert start_tracing({}, trust_incoming=False) is None
    assert start_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, trust_incoming=False) is None


def test_sdk_disabled_wins_over_an_endpoint() -> None:
    environ = {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}
    assert start_tracing(environ, trust_incoming=False) is None


def test_the_general_endpoint_exports_to_v1_traces_under_it(collector: Collector) -> None:
    """The collector answers 404 anywhere but /v1/traces: a span there proves the path."""
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}) == (
        "http://h:4318/v1/traces"
    )
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318/"}) == (
        "http://h:4318/v1/traces"
    )
    assert exported_through({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}, collector) == ["probe"]


def test_the_traces_endpoint_wins_and_is_used_as_given(collector: Collector) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318",
    }
    assert traces_endpoint(environ) == "http://t:4318/custom"
    nobody = f"http://127.0.0.1:{free_port()}"
    environ = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.url}/v1/traces",
        "OTEL_EXPORTER_OTLP_ENDPOINT": nobody,
    }
    assert exported_through(environ, collector) == ["probe"]


def test_a_queue_smaller_than_a_batch_starts(collector: Collector) -> None:
    """OTEL_BSP_MAX_QUEUE_SIZE under the SDK's batch of 512, alone: it was a ValueError
    traceback at start-up (the SDK refuses a batch larger than its queue)."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_MAX_QUEUE_SIZE": "64"}
    assert exported_through(environ, collector) == ["probe"]


def test_a_stop_gives_up_on_a_hanging_collector_after_its_bound() -> None:
    """With the SDK's export timeout (10 s), an export hanging and a span queued behind
    it: the SDK's own shutdown waited 19 s here (up to 30)."""
    hanging = Collector(hang=True)
    try:
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": hanging.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        tracing = start_tracing(environ, trust_incoming=False)
        assert tracing is not None
        tracing.tracer.start_span("sent").end()
        wait_until(lambda: hanging.exports == 1, timeout=5)
        tracing.tracer.start_span("queued").end()
        began = time.monotonic()
        tracing.shutdown()
        assert time.monotonic() - began < SHUTDOWN_MILLIS / 1000 + 2
    finally:
        hanging.stop()


ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
RATIO = {**ENDPOINT, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
# The environment, the variable the refusal names, and its value, which it must not echo.
BAD_VALUES: list[tuple[dict[str, str], str, str | None]] = [
    ({**ENDPOINT, "OTEL_TRACES_SAMPLER": "bogus"}, "OTEL_TRACES_SAMPLER", "bogus"),
    *[
        ({**RATIO, "OTEL_TRACES_SAMPLER_ARG": ratio}, "OTEL_TRACES_SAMPLER_ARG", ratio)
        for ratio in ("abc", "1.5", "nan", "-0.1", "inf")
    ],
    (
        {**ENDPOINT, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
        "OTEL_TRACES_SAMPLER_ARG",
        "2",
    ),
    *[
        ({name: url}, name, url)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        for url in (
            "ftp://x",
            "not a url",
            "http:///v1/traces",
            "http://[::1",
            "http://h:99999",
            "http://h:port",
            "http://h\x00:4318",
        )
    ],
    *[
        ({**ENDPOINT, name: "grpc"}, name, "grpc")
        for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    ],
    *[
        ({**ENDPOINT, name: value}, name, value)
        for name in (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BSP_SCHEDULE_DELAY",
        )
        for value in ("0", "-3", "x", "1.5", "²", "99999999999999999999")
    ],
    ({**ENDPOINT, "OTEL_BSP_MAX_QUEUE_SIZE": "65537"}, "OTEL_BSP_MAX_QUEUE_SIZE", "65537"),
    ({**ENDPOINT, "OTEL_BSP_SCHEDULE_DELAY": "3600001"}, "OTEL_BSP_SCHEDULE_DELAY", "3600001"),
    *[
        ({name: url}, name, url)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        for url in ("http://exa mple.com:4318", "http://%zz:4318", "http://h:4318/?api_key=x")
    ],
    *[
        ({**ENDPOINT, name: headers}, name, headers)
        for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        for headers in ("tokenabc", "x-k=v%0Ax-evil=1", "bad name=v", "x-k=v,(k)=v")
    ],
    *[
        # "0" is a word of the message's own bound ("from 0 to 300"): None skips that check.
        ({**ENDPOINT, name: seconds}, name, None if seconds == "0" else seconds)
        for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        for seconds in ("ten", "0", "nan", "301", "-1")
    ],
    *[
        ({**ENDPOINT, name: "bogus"}, name, "bogus")
        for name in ("OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
    ],
    *[
        ({**ENDPOINT, name: "/nonexistent/otlp.pem"}, name, "/nonexistent/otlp.pem")
        for suffix in ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE")
        for name in (f"OTEL_EXPORTER_OTLP_{suffix}", f"OTEL_EXPORTER_OTLP_TRACES_{suffix}")
    ],
    *[
        ({**ENDPOINT, name: value}, name, value)
        for name in LIMIT_VARIABLES
        for value in ("many", "0", "9" * 5000)
    ],
    ({**ENDPOINT, "OTEL_BSP_EXPORT_TIMEOUT": "soon"}, "OTEL_BSP_EXPORT_TIMEOUT", "soon"),
    (
        {**ENDPOINT, "OTEL_RESOURCE_ATTRIBUTES": "team=hooks,staging"},
        "OTEL_RESOURCE_ATTRIBUTES",
        "staging",
    ),
]


@pytest.mark.parametrize(("environ", "name", "value"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_the_variable_not_the_value(
    environ: dict[str, str], name: str, value: str | None
) -> None:
    with pytest.raises(SettingsError) as refused:
        start_tracing(environ, trust_incoming=False)
    message = str(refused.value)
    assert message.startswith(f"{name}: ")
    # Not as a word of its own: "0" may be a digit of the bound the message names.
    if value is not None:
        echoed = rf"(?<![\w.]){re.escape(value)}(?![\w.])"
        assert re.search(echoed, message.removeprefix(f"{name}: ")) is None
    assert "\n" not in message


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_cli_refuses_a_bad_sampler_in_one_line(
    command: str, tmp_path: Path, new_secrets: Callable[[], str]
) -> None:
    env = {
        "RECEIVER_SIGNING_SECRETS": new_secrets(),
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'r.db'}",
        "RECEIVER_FORWARD_URL": f"http://127.0.0.1:{free_port()}/hooks",
        "RECEIVER_FORWARD_SIGNING_SECRETS": new_secrets(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_TRACES_SAMPLER": "bogus",
    }
    port = ("--port", str(free_port())) if command == "serve" else ()
    result = run_cli(command, *port, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: OTEL_TRACES_SAMPLER: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bogus" not in result.stderr


@pytest.mark.parametrize(
    ("variables", "name"),
    [
        ({}, "rivya-receiver"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging"}, "rivya-receiver"),
        ({"OTEL_SERVICE_NAME": "receiver-eu"}, "receiver-eu"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=hooks,service.name=receiver-us"}, "receiver-us"),
        # A key that merely contains "service.name" names nothing.
        ({"OTEL_RESOURCE_ATTRIBUTES": "app.previous_service.name=billing"}, "rivya-receiver"),
    ],
)
def test_the_service_is_named_rivya_receiver_unless_told(
    variables: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's Resource.create reads os.environ itself: the variables are set there too."""
    for variable in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    tracing = start_tracing({**ENDPOINT, **variables}, trust_incoming=False)
    assert tracing is not None
    tracing.shutdown()
    assert tracing.provider.resource.attributes["service.name"] == name


def in_memory_pipeline() -> tuple[TracerProvider, InMemorySpanExporter, DroppedSpans]:
    """The module's own exporter and processor, sending to memory instead of OTLP."""
    memory, dropped = InMemorySpanExporter(), DroppedSpans()
    provider = TracerProvider()
    exporter = CountingExporter(memory, dropped)
    provider.add_span_processor(CountingBatchProcessor(exporter, 16, dropped))
    return provider, memory, dropped


def test_a_failing_span_leaves_with_its_exception_class_only() -> None:
    provider, memory, _ = in_memory_pipeline()
    tracer = provider.get_tracer("test")
    with pytest.raises(ValueError, match="secret text"), tracer.start_as_current_span("fails"):
        raise ValueError("secret text")
    provider.force_flush()
    (span,) = memory.get_finished_spans()
    assert [(event.name, dict(event.attributes or {})) for event in span.events] == [
        ("exception", {"exception.type": "ValueError"})
    ]
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert "secret text" not in span.to_json()
    provider.shutdown()


def test_a_span_without_exception_or_description_is_exported_as_is() -> None:
    provider, memory, _ = in_memory_pipeline()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("fine") as span:
        span.add_event("retry", {"receiver.attempt": 2})
        span.set_status(Status(StatusCode.ERROR))
    provider.force_flush()
    (exported,) = memory.get_finished_spans()
    assert scrubbed(exported) is exported
    assert [event.name for event in exported.events] == ["retry"]
    provider.shutdown()


class BlockingExporter(SpanExporter):
    """Holds the first export until released, as a hanging collector does."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(timeout=30)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def end_spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("test")
    for _ in range(count):
        tracer.start_span("work").end()


def test_a_full_queue_counts_exactly_the_spans_it_drops() -> None:
    blocking, dropped = BlockingExporter(), DroppedSpans()
    provider = TracerProvider()
    processor = CountingBatchProcessor(CountingExporter(blocking, dropped), 4, dropped)
    provider.add_span_processor(processor)
    end_spans(provider, 4)  # a whole batch: the exporter's thread takes it and hangs
    assert blocking.entered.wait(timeout=10)
    end_spans(provider, 4 + 3)  # the queue fills with 4; 3 have no room
    assert dropped.by_reason == {"queue_full": 3, "export_failed": 0}
    blocking.release.set()
    provider.shutdown()
    assert blocking.exported == 8
    assert dropped.by_reason == {"queue_full": 3, "export_failed": 0}


class RefusingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def test_a_refused_export_counts_its_batch_as_failed() -> None:
    dropped = DroppedSpans()
    provider = TracerProvider()
    provider.add_span_processor(
        CountingBatchProcessor(CountingExporter(RefusingExporter(), dropped), 4, dropped)
    )
    end_spans(provider, 3)
    provider.force_flush()
    assert dropped.by_reason == {"queue_full": 0, "export_failed": 3}
    provider.shutdown()


def remote(trace_state: TraceState | None = None) -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=trace_state,
        )
    )


def test_a_carrier_round_trips_a_span_context() -> None:
    span = remote(TraceState([("rivya", "t61rcWkgMzE"), ("congo", "ucfJifl5GOE")]))
    carrier = carrier_of(span)
    assert carrier == Carrier(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "rivya=t61rcWkgMzE,congo=ucfJifl5GOE",
    )
    context = context_of(carrier)
    assert context is not None
    back = trace.get_current_span(context).get_span_context()
    original = span.get_span_context()
    assert (back.trace_id, back.span_id, back.trace_flags, back.trace_state) == (
        original.trace_id,
        original.span_id,
        original.trace_flags,
        original.trace_state,
    )


def test_a_tracestate_over_512_characters_is_not_kept() -> None:
    # Each member "kN=" plus 250 characters; two fit in 512 with their comma, three do not.
    members = [(f"k{n}", "v" * 250) for n in range(3)]
    assert len(carrier_of(remote(TraceState(members[:2]))).tracestate or "") <= (  # type: ignore[union-attr]
        MAX_TRACESTATE_CHARS
    )
    carrier = carrier_of(remote(TraceState(members)))
    assert carrier is not None
    assert carrier.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert carrier.tracestate is None


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333\x00-01",
    ],
)
def test_an_invalid_traceparent_gives_no_context(traceparent: str) -> None:
    assert context_of(Carrier(traceparent)) is None
    assert context_of(None) is None


def replayed_delivery(replay_trace: Carrier | None) -> ClaimedDelivery:
    """A delivery a replay queued, of an event stored under `remote()`'s span."""
    return ClaimedDelivery(
        id=7,
        destination="default",
        event_id="evt_1",
        attempts_made=0,
        target_url=None,
        body=b"{}",
        trace=carrier_of(remote()),
        replayed=True,
        replay_trace=replay_trace,
    )


def test_a_replay_queued_untraced_starts_its_attempts_own_trace_linked_to_the_event() -> None:
    """A CLI replay without tracing stores no context of its own: the attempt is the root of
    a new trace (no invented sampled parent, which a ratio sampler would have obeyed), linked
    to the event's span; it is never a child of the event's first trace."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    original = remote().get_span_context()
    with attempt_span(tracer, destination(), replayed_delivery(None)):
        pass
    (span,) = memory.get_finished_spans()
    assert span.parent is None
    assert span.context is not None
    assert span.context.trace_id != original.trace_id
    assert [(link.context.span_id, dict(link.attributes or {})) for link in span.links] == [
        (original.span_id, {"receiver.link": "replay_of"})
    ]
    provider.shutdown()


def test_a_traced_replays_attempt_is_a_child_of_the_replay_linked_to_the_event() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    replay = Carrier("00-11111111111111111111111111111111-2222222222222222-01")
    with attempt_span(provider.get_tracer("test"), destination(), replayed_delivery(replay)):
        pass
    (span,) = memory.get_finished_spans()
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (int("1" * 32, 16), int("2" * 16, 16))
    assert [link.context.span_id for link in span.links] == [remote().get_span_context().span_id]
    provider.shutdown()


class HeaderRecorder(TraceSink):
    """A loopback OTLP/HTTP endpoint that keeps each request's headers and raw body and
    answers 200: what an exporter sends, as it sends it."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        super().__init__()

    def take(self, request: BaseHTTPRequestHandler, body: bytes) -> int:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append((headers, body))
        return 200


@pytest.fixture
def recorder() -> Iterator[HeaderRecorder]:
    found = HeaderRecorder()
    yield found
    found.stop()


def test_headers_timeout_and_gzip_reach_the_collector_as_given(recorder: HeaderRecorder) -> None:
    """The collector's headers (URL-decoded), the export timeout and gzip compression are
    read by us and handed to the exporter: the collector sees the headers and a gzip body
    that decodes to the span."""
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": recorder.url,
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-k=v",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    }
    variables = read_variables(environ)
    assert variables is not None
    assert variables.timeout_seconds == 2.5
    tracing = start_tracing(environ, trust_incoming=False)
    assert tracing is not None
    with tracing.tracer.start_as_current_span("probe"):
        pass
    tracing.shutdown()
    ((headers, body),) = recorder.requests
    assert (headers["authorization"], headers["x-k"]) == ("Bearer abc", "v")
    assert headers["content-encoding"] == "gzip"
    request = ExportTraceServiceRequest()
    request.ParseFromString(gzip.decompress(body))
    assert [span.name for span in request.resource_spans[0].scope_spans[0].spans] == ["probe"]


def test_an_ipv6_endpoint_is_accepted() -> None:
    tracing = start_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1]:4318"}, False)
    assert tracing is not None
    tracing.shutdown()


def test_a_credential_provider_the_exporter_cannot_load_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exporter reads this variable from os.environ itself and raised its own error."""
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "nope")
    with pytest.raises(SettingsError) as refused:
        start_tracing(ENDPOINT, trust_incoming=False)
    assert str(refused.value) == "OTEL_EXPORTER_OTLP_*: the exporter refused its settings"


def spans_of(environ: dict[str, str], make: Callable[[Tracer], None]) -> list[ReadableSpan]:
    """The spans `make` ends under a pipeline `environ` started, as the SDK kept them."""
    # Nothing listens at ENDPOINT: a short export timeout keeps the stop from waiting on it.
    quick = {"OTEL_EXPORTER_OTLP_TIMEOUT": "0.2"}
    tracing = start_tracing({**ENDPOINT, **quick, **environ}, trust_incoming=False)
    assert tracing is not None
    memory = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
    make(tracing.tracer)
    spans = list(memory.get_finished_spans())
    tracing.provider.shutdown()
    return spans


def long_attribute(tracer: Tracer) -> None:
    tracer.start_span("long", attributes={"http.target": "/" + "a" * 60_000}).end()


def test_an_attribute_value_is_cut_at_1024_characters_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (span,) = spans_of({}, long_attribute)
    assert len(str((span.attributes or {})["http.target"])) == MAX_ATTRIBUTE_CHARS == 1024


def test_the_attribute_length_variable_wins_over_our_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads the variable from os.environ: it is set there as well."""
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "2000")
    (span,) = spans_of({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "2000"}, long_attribute)
    assert len(str((span.attributes or {})["http.target"])) == 2000


def test_a_span_keeps_256_links_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group-commit batch links every request it acknowledged: over the SDK's 128."""
    monkeypatch.delenv("OTEL_SPAN_LINK_COUNT_LIMIT", raising=False)
    links = [Link(SpanContext(trace_id=n + 1, span_id=n + 1, is_remote=True)) for n in range(300)]
    (span,) = spans_of({}, lambda tracer: tracer.start_span("batch", links=links).end())
    assert len(span.links) == MAX_LINKS == 256


def test_dropped_spans_are_logged_at_most_once_a_period_and_at_the_stop() -> None:
    """Where no /metrics serves the count (a worker, a command), the log says it: when the
    counts change, at most once every REPORT_SECONDS, and once more as tracing stops."""
    dropped = DroppedSpans()
    with capture_logs() as logs:
        DroppedSpans().report(0.0, final=True)  # nothing dropped: nothing to say
        dropped.add("export_failed", 3)
        dropped.report(0.0)
        dropped.add("queue_full", 2)
        dropped.report(REPORT_SECONDS / 2)  # too soon after the last line
        dropped.report(REPORT_SECONDS)
        dropped.report(REPORT_SECONDS * 3)  # unchanged
        dropped.add("export_failed", 1)
        dropped.report(REPORT_SECONDS * 3 + 1, final=True)
    assert [
        (line["event"], line["export_failed"], line["queue_full"], line["log_level"])
        for line in logs
    ] == [
        ("trace_spans_dropped", 3, 0, "warning"),
        ("trace_spans_dropped", 3, 2, "warning"),
        ("trace_spans_dropped", 4, 2, "warning"),
    ]


def test_the_first_drop_after_a_healthy_while_is_logged_at_once() -> None:
    """Exports that drop nothing (each one reports) do not start the period: the first drop
    after them is said at its own export, not a period later."""
    dropped = DroppedSpans()
    with capture_logs() as logs:
        for second in range(10):
            dropped.report(float(second))  # healthy exports
        dropped.add("export_failed", 5)
        dropped.report(10.0)
    assert [(line["event"], line["export_failed"]) for line in logs] == [("trace_spans_dropped", 5)]


def test_an_ingest_request_cancelled_before_its_answer_has_no_status_of_500() -> None:
    """A stop cancels a request in flight: its span says CancelledError, with no status code
    (none was sent) and no ERROR status it never answered with."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.sleep(60)

    async def receive_nothing() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send_nothing(message: Message) -> None:
        pass

    middleware = TraceRequests(app, Tracing(provider, False, DroppedSpans()), [], "/webhooks/rivya")
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/rivya",
        "headers": [],
        "client": ("127.0.0.1", 5000),
    }

    async def cancelled() -> None:
        request = asyncio.create_task(middleware(scope, receive_nothing, send_nothing))
        await started.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(cancelled())
    (span,) = memory.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "CancelledError"
    assert "http.response.status_code" not in attributes
    assert span.status.status_code is StatusCode.UNSET
    provider.shutdown()
