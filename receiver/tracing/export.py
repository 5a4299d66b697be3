"""What leaves the process: the SDK's batch processor and OTLP/HTTP exporter, counting the
spans they drop, and scrubbing each span of what must never leave.

Spans go out over OTLP/HTTP with protobuf, in batches, from the `BatchSpanProcessor`'s
thread: a request never waits for the collector. Its queue holds at most
`OTEL_BSP_MAX_QUEUE_SIZE` spans (2048); past that, and when an export fails (the collector
down, slow past `OTEL_EXPORTER_OTLP_TIMEOUT`, or refusing), spans are dropped and counted
(`receiver_trace_spans_dropped_total`), so memory stays flat whatever the collector does.
"""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from receiver.logs import log
from receiver.tracing.variables import DEFAULT_MAX_EXPORT_BATCH_SIZE, DEFAULT_SCHEDULE_DELAY_MILLIS

# How long a stop waits to export what is queued. The SDK waits 30 s (for an export hanging,
# then each queued batch): beside the service's own graceful stop (20 s for requests in
# flight, deploy/README.md) that outlasts compose's 30 s grace and Kubernetes' 40, and the
# process is killed mid-way. Past this, what is left is dropped.
SHUTDOWN_MILLIS = 5000
# Dropped spans are logged at most this often (their metric, where there is one, is live).
REPORT_SECONDS = 60.0


@dataclass
class DroppedSpans:
    """Spans that never reached the collector, by why: `queue_full` (more ended than the
    exporter could send) or `export_failed` (the collector was down, slow or refused)."""

    by_reason: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "export_failed": 0})
    # The exporter's thread and the event loop's both count.
    lock: threading.Lock = field(default_factory=threading.Lock)

    # What the last log line said, and when (time.monotonic()).
    reported: dict[str, int] = field(default_factory=dict)
    reported_at: float = -REPORT_SECONDS

    def add(self, reason: str, count: int) -> None:
        with self.lock:
            self.by_reason[reason] += count

    def report(self, now: float, final: bool = False) -> None:
        """A warning with the counts since start, when they changed: at most one a
        REPORT_SECONDS, and a last one as tracing stops. The process's only word of its
        drops where no /metrics is served (a worker, a command)."""
        with self.lock:
            counts = dict(self.by_reason)
            if counts == self.reported or not any(counts.values()):
                return
            if not final and now - self.reported_at < REPORT_SECONDS:
                return
            self.reported, self.reported_at = counts, now
        log.warning("trace_spans_dropped", **counts)


class CountingExporter(SpanExporter):
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
        self._dropped.report(time.monotonic())
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans its full queue drops. Its queue keeps
    the newest `max_queue_size` spans; it tells nothing of those it drops but a log line,
    so the count follows the queue: a sampled span enters as it ends, and a batch leaves
    as it is handed to the exporter."""

    def __init__(
        self,
        exporter: CountingExporter,
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
