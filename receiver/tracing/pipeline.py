"""The tracing pipeline of one process: the SDK's provider, sampler and batching exporter,
configured by the standard OTEL_* variables, or nothing at all.

Tracing is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
set (and `OTEL_SDK_DISABLED` is not true). Spans go out over OTLP/HTTP with protobuf, in
batches, from the SDK's `BatchSpanProcessor` thread: a request never waits for the
collector. Its queue holds at most `OTEL_BSP_MAX_QUEUE_SIZE` spans (2048); past that, and
when an export fails (the collector down, slow past `OTEL_EXPORTER_OTLP_TIMEOUT`, or
refusing), spans are dropped and counted (`receiver_trace_spans_dropped_total`), so memory
stays flat whatever the collector does.

The OTEL_* variables are read from the process's environment (not `.env`), as the SDK
itself reads the ones it honours directly (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, ...). Those this service decides
with are checked here, and a value the SDK would silently replace with a default (an
unknown sampler, a ratio that is not a number) stops start-up with one line naming it.
"""

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Status, Tracer

from receiver.exceptions import SettingsError

DEFAULT_SERVICE_NAME = "rivya-receiver"
DEFAULT_SAMPLER = "parentbased_always_on"
# The SDK's own defaults, read here as well because the drop count needs the queue's bound
# and the SDK refuses, with a traceback, a batch larger than the queue or a delay of 0.
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_SCHEDULE_DELAY_MILLIS = 5000
# Upper bounds, where the SDK fails past some value: a queue longer than a C ssize_t stops
# start-up with a traceback, a delay past time_t kills the export thread (every span then
# dropped). 65,536 spans are about 200 MiB at the 3 KB a span measured; a delay of an hour
# already leaves a trace unreadable for that long.
MOST_SPANS = 65_536
MOST_DELAY_MILLIS = 3_600_000
# How long a stop waits to export what is queued. The SDK waits 30 s (for an export hanging,
# then each queued batch): beside the service's own graceful stop (20 s for requests in
# flight, deploy/README.md) that outlasts compose's 30 s grace and Kubernetes' 40, and the
# process is killed mid-way. Past this, what is left is dropped.
SHUTDOWN_MILLIS = 5000
# A group-commit batch links every request it acknowledged: up to the writer's largest
# batch (receiver.store.writer), over the SDK's default of 128 links a span.
MAX_LINKS = 256
FIXED_SAMPLERS: dict[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
RATIO_SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
TRACES_PATH = "v1/traces"
INSTALLED_PROPAGATORS = frozenset({"tracecontext", "baggage", "none"})


@dataclass
class DroppedSpans:
    """Spans that never reached the collector, by why: `queue_full` (more ended than the
    exporter could send) or `export_failed` (the collector was down, slow or refused)."""

    by_reason: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "export_failed": 0})
    # The exporter's thread and the event loop's both count.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, reason: str, count: int) -> None:
        with self.lock:
            self.by_reason[reason] += count


class Tracing:
    """One process's tracing: the tracer every span of ours comes from, the provider the
    instrumentations are handed, and whether an incoming `traceparent` may be our parent."""

    def __init__(self, provider: TracerProvider, trust_incoming: bool, dropped: DroppedSpans):
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("receiver")
        self.trust_incoming = trust_incoming
        self.dropped = dropped

    def shutdown(self) -> None:
        """Export what is queued (within the exporter's timeout), then stop its thread."""
        self.provider.shutdown()


def start_tracing(environ: Mapping[str, str], trust_incoming: bool) -> Tracing | None:
    """The pipeline `environ` asks for, or None when it names no OTLP endpoint."""
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return None
    _check_protocol(environ)
    _check_propagators(environ)
    dropped = DroppedSpans()
    max_queue_size = _positive_int(
        environ, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE, MOST_SPANS
    )
    batch_size = _positive_int(
        environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE, MOST_SPANS
    )
    delay = _positive_int(
        environ, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MILLIS, MOST_DELAY_MILLIS
    )
    limits = {} if environ.get("OTEL_SPAN_LINK_COUNT_LIMIT") else {"max_links": MAX_LINKS}
    provider = TracerProvider(
        sampler=read_sampler(environ),
        resource=_resource(environ),
        span_limits=SpanLimits(**limits),
    )
    exporter = _CountingExporter(OTLPSpanExporter(endpoint=endpoint), dropped)
    provider.add_span_processor(
        _CountingBatchProcessor(exporter, max_queue_size, dropped, batch_size, delay)
    )
    return Tracing(provider, trust_incoming, dropped)


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """Where spans go: the traces endpoint as given, or `v1/traces` under the general one."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if endpoint := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        _check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        return endpoint
    if endpoint := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        _check_url("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        return endpoint.rstrip("/") + "/" + TRACES_PATH
    return None


def read_sampler(environ: Mapping[str, str]) -> Sampler:
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or DEFAULT_SAMPLER
    if name in FIXED_SAMPLERS:
        return FIXED_SAMPLERS[name]
    if name not in RATIO_SAMPLERS:
        known = ", ".join([*FIXED_SAMPLERS, *RATIO_SAMPLERS])
        raise SettingsError(f"OTEL_TRACES_SAMPLER: use one of {known}")
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
    try:
        ratio = float(argument)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:  # NaN fails this too
        raise SettingsError("OTEL_TRACES_SAMPLER_ARG: give a ratio from 0 to 1, such as 0.01")
    return RATIO_SAMPLERS[name](ratio)


def _resource(environ: Mapping[str, str]) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME itself, and names
    # a service it was not told of "unknown_service": ours has a name of its own.
    resource = Resource.create()
    if environ.get("OTEL_SERVICE_NAME") or "service.name" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        return resource
    return resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))


def _check_protocol(environ: Mapping[str, str]) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if (protocol := environ.get(name, "").strip()) and protocol != "http/protobuf":
            raise SettingsError(f"{name}: only http/protobuf is supported")


def _check_propagators(environ: Mapping[str, str]) -> None:
    # The SDK's global propagators, which the instrumentations use, load these by name and
    # fail at import for any other (no B3 or Jaeger package is installed).
    names = {name.strip() for name in environ.get("OTEL_PROPAGATORS", "").split(",")} - {""}
    if names - INSTALLED_PROPAGATORS:
        raise SettingsError("OTEL_PROPAGATORS: use tracecontext, baggage or none")


def _check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        # The port is read to be checked: one out of range or not a number raises here, not
        # at each export (which would drop every span).
        usable = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and parts.port != 0
            and url.isprintable()
        )
    except ValueError:  # an unclosed IPv6 bracket, a port that is not one
        usable = False
    if not usable:
        raise SettingsError(f"{name}: give an http:// or https:// URL")


def _positive_int(environ: Mapping[str, str], name: str, default: int, most: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    # isdigit alone takes "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= most:
        raise SettingsError(f"{name}: give a whole number from 1 to {most}")
    return int(value)


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting the spans of every batch it could not deliver."""

    def __init__(self, exporter: SpanExporter, dropped: DroppedSpans) -> None:
        self._exporter = exporter
        self._dropped = dropped
        self.on_batch: Callable[[int], None] = lambda _: None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.on_batch(len(spans))
        try:
            result = self._exporter.export([scrubbed(span) for span in spans])
        except Exception:
            self._dropped.add("export_failed", len(spans))
            raise
        if result is not SpanExportResult.SUCCESS:
            self._dropped.add("export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans its full queue drops. Its queue keeps
    the newest `max_queue_size` spans; it tells nothing of those it drops but a log line,
    so the count follows the queue: a sampled span enters as it ends, and a batch leaves
    as it is handed to the exporter."""

    def __init__(
        self,
        exporter: _CountingExporter,
        max_queue_size: int,
        dropped: DroppedSpans,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay_millis: int = DEFAULT_SCHEDULE_DELAY_MILLIS,
    ) -> None:
        # A queue smaller than a batch (OTEL_BSP_MAX_QUEUE_SIZE alone set under 512) is sent
        # whole, where the SDK would refuse to start.
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
        )
        self._max_queue_size = max_queue_size
        self._queued = 0
        self._dropped = dropped
        exporter.on_batch = self._left_queue

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            with self._dropped.lock:
                if self._queued >= self._max_queue_size:
                    self._dropped.by_reason["queue_full"] += 1
                else:
                    self._queued += 1
        super().on_end(span)

    def _left_queue(self, count: int) -> None:
        with self._dropped.lock:
            self._queued = max(0, self._queued - count)

    def shutdown(self) -> None:
        self._batch_processor.shutdown(timeout_millis=SHUTDOWN_MILLIS)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """`span` without exception messages or stack traces, as the logs keep none: a message
    can quote SQL parameters, and so a body. What is left says what failed: the exception's
    class (`exception.type`), and the status without its description's message."""
    status = span.status
    if status.description:
        status = Status(status.status_code, status.description.partition(":")[0])
    exceptions = [event for event in span.events if event.name == "exception"]
    if not exceptions and status is span.status:
        return span
    events = [
        Event(
            "exception",
            {"exception.type": str((event.attributes or {}).get("exception.type", ""))},
            event.timestamp,
        )
        if event.name == "exception"
        else event
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
