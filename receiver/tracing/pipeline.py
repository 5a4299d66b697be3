"""The tracing pipeline of one process: the SDK's provider, sampler and batching exporter,
as the standard OTEL_* variables ask (`variables`), or nothing at all.

Tracing is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
set (and `OTEL_SDK_DISABLED` is not true). The provider is this process's own, handed to
what makes spans, never set globally: several apps in one process (the tests) each keep
theirs.
"""

import time
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from receiver.exceptions import SettingsError
from receiver.tracing.export import CountingBatchProcessor, CountingExporter, DroppedSpans
from receiver.tracing.variables import read_variables


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
        self.dropped.report(time.monotonic(), final=True)


def start_tracing(environ: Mapping[str, str], trust_incoming: bool) -> Tracing | None:
    """The pipeline `environ` asks for, or None when it names no OTLP endpoint."""
    variables = read_variables(environ)
    if variables is None:
        return None
    dropped = DroppedSpans()
    provider = TracerProvider(
        sampler=variables.sampler, resource=variables.resource, span_limits=variables.span_limits
    )
    try:
        otlp = OTLPSpanExporter(
            endpoint=variables.endpoint,
            headers=variables.headers,
            timeout=variables.timeout_seconds,
            compression=variables.compression,
        )
    except (ValueError, RuntimeError):
        # What it reads itself and refuses (a credential provider that is not installed).
        raise SettingsError("OTEL_EXPORTER_OTLP_*: the exporter refused its settings") from None
    exporter = CountingExporter(otlp, dropped)
    provider.add_span_processor(
        CountingBatchProcessor(
            exporter,
            variables.max_queue_size,
            dropped,
            variables.max_export_batch_size,
            variables.schedule_delay_millis,
        )
    )
    return Tracing(provider, trust_incoming, dropped)
