"""A real OTLP/HTTP trace collector on loopback, for the tracing tests: it decodes every
`ExportTraceServiceRequest` body it is sent (protobuf, with `opentelemetry-proto`), keeps
the spans, and can instead answer an error or hang, as a collector down or slow does."""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from bench.tracing import TRACES_PATH, TraceSink

SERVER = SpanMessage.SpanKind.SPAN_KIND_SERVER
CLIENT = SpanMessage.SpanKind.SPAN_KIND_CLIENT
INTERNAL = SpanMessage.SpanKind.SPAN_KIND_INTERNAL


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class CollectedSpan:
    """One exported span, its IDs in hex as `traceparent` writes them."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[Link]
    status_code: int
    status_message: str
    service_name: str

    def text(self) -> str:
        """Everything the span carries, as text to scan for what must never be there."""
        return repr(
            (
                self.name,
                self.attributes,
                self.events,
                [link.attributes for link in self.links],
                self.status_message,
            )
        )


class Collector(TraceSink):
    """Answers `status` to every export (200 takes the spans), or holds each request until
    stopped when `hang`; `exports` counts every request, whatever its answer."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self._spans: list[CollectedSpan] = []
        self._released = threading.Event()
        super().__init__()

    def take(self, request: BaseHTTPRequestHandler, body: bytes) -> int | None:
        with self._lock:
            self.exports += 1
        if self.hang:
            self._released.wait()
            return None
        if request.path != TRACES_PATH or self.status != 200:
            return 404 if request.path != TRACES_PATH else self.status
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            self._spans.extend(_spans_of(request))
        return 200

    def env(self, **overrides: str) -> dict[str, str]:
        """The OTEL_* variables of a service exporting here, quickly (batches every 100 ms)."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_TRACES_SAMPLER": "always_on",
            **overrides,
        }

    def spans(self) -> list[CollectedSpan]:
        with self._lock:
            return list(self._spans)

    def named(self, name: str) -> list[CollectedSpan]:
        return [span for span in self.spans() if span.name == name]

    def wait_for(
        self, name: str, count: int = 1, timeout: float = 15.0, **attributes: Any
    ) -> list[CollectedSpan]:
        """The spans called `name` with `attributes`, once at least `count` have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                span
                for span in self.named(name)
                if all(span.attributes.get(key) == value for key, value in attributes.items())
            ]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                names = sorted({span.name for span in self.spans()})
                raise AssertionError(f"{len(found)} of {count} {name!r} spans; got {names}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._released.set()
        super().stop()


def _spans_of(request: ExportTraceServiceRequest) -> Iterable[CollectedSpan]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield CollectedSpan(
                    name=span.name,
                    kind=span.kind,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    events=[(event.name, _attributes(event.attributes)) for event in span.events],
                    links=[
                        Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                        for link in span.links
                    ],
                    status_code=span.status.code,
                    status_message=span.status.message,
                    service_name=str(resource.get("service.name", "")),
                )


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None
