"""What the tracing test modules share: the span names they wait for, the types of the
fixtures that start things of a test's own, and the readings of a span, a `traceparent` and a
process's log that more than one module makes."""

from collections.abc import Callable
from typing import Any

from tests.conftest import Rivya
from tests.helpers import Downstream, ReceiverProcess, signed
from tests.otlp_collector import CollectedSpan, Collector

INGEST = "POST /webhooks/rivya"
DELIVER = "receiver.deliver"

StartServer = Callable[..., ReceiverProcess]
StartDownstream = Callable[..., Downstream]
StartCollector = Callable[..., Collector]
# Rivya, sending to the server given (the `rivya_at` fixture).
RivyaAt = Callable[[ReceiverProcess], Rivya]


def of_event(event_id: str) -> dict[str, Any]:
    """The attribute that names the event a span is about, for `Collector.wait_for`."""
    return {"receiver.event_id": event_id}


def attempts_of(collector: Collector, event_id: str, count: int = 1) -> list[CollectedSpan]:
    """The delivery attempts' spans for `event_id`, by attempt number."""
    spans = collector.wait_for(DELIVER, count, **of_event(event_id))
    return sorted(spans, key=lambda span: span.attributes["receiver.delivery.attempt"])


def send_traced(rivya: Rivya, event: dict[str, Any], **trace_headers: str) -> None:
    """`event`, signed, with `trace_headers` (traceparent, tracestate) beside the signature's;
    answered 200."""
    body, headers = signed(rivya.secret, event)
    assert rivya.post(body, {**headers, **trace_headers}).status_code == 200


def traceparent_parts(traceparent: str) -> tuple[str, str, bool]:
    """The trace ID, the parent's span ID and the sampled flag a `traceparent` carries."""
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert version == "00"
    return trace_id, parent_id, bool(int(flags, 16) & 1)


def logged_span(process: ReceiverProcess, span: CollectedSpan, after: int = 0) -> bool:
    """Whether `process` wrote a log line within `span` (past `after` characters of its
    output): the span is its own, not another process's."""
    return f'"span_id":"{span.span_id}"' in process.output()[after:].replace(" ", "")
