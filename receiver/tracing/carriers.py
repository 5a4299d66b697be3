"""W3C trace context (`traceparent`, `tracestate`) as this service carries it: stored with an
event by the span that stored it, read back when a delivery of it is attempted (in this
process or another, minutes or days later), and sent with each attempt.

The stored form is the headers' own text, so the columns hold what the W3C specifies and
nothing of ours: `traceparent` is 55 characters, and a `tracestate` over the 512 its
specification lets a sender cut is not kept (the trace stays whole without it).
"""

from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.typing import EventDict, WrappedLogger

MAX_TRACESTATE_CHARS = 512
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True, slots=True)
class Carrier:
    """A span's context, as the `traceparent` and `tracestate` headers write it."""

    traceparent: str
    tracestate: str | None = None


def carrier_of(span: Span | None) -> Carrier | None:
    """`span`'s context to store or send, or None for no span (tracing off)."""
    if span is None:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    state = context.trace_state.to_header() or None
    if state is not None and len(state) > MAX_TRACESTATE_CHARS:
        state = None
    return Carrier(_traceparent(context), state)


def context_of(carrier: Carrier | None) -> Context | None:
    """The context whose span is `carrier`'s, to start a child of; None if it holds none
    (stored before tracing, or unreadable)."""
    if carrier is None:
        return None
    headers = {"traceparent": carrier.traceparent}
    if carrier.tracestate:
        headers["tracestate"] = carrier.tracestate
    context = _PROPAGATOR.extract(headers)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def span_context_of(carrier: Carrier | None) -> SpanContext | None:
    """`carrier`'s span context, to link to."""
    context = context_of(carrier)
    return None if context is None else trace.get_current_span(context).get_span_context()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace ID a stored `traceparent` names, to look the trace up by; None if none."""
    context = span_context_of(Carrier(traceparent) if traceparent else None)
    return trace.format_trace_id(context.trace_id) if context else None


def headers_for(span: Span) -> dict[str, str]:
    """The `traceparent` (and `tracestate`) that make `span` the parent of what they reach."""
    headers: dict[str, str] = {}
    if span.get_span_context().is_valid:
        _PROPAGATOR.inject(headers, trace.set_span_in_context(span))
    return headers


def trace_exemplar() -> dict[str, str] | None:
    """The current trace's ID as a Prometheus exemplar, when it is one being recorded."""
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": trace.format_trace_id(context.trace_id)}


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog: the current span's trace and span IDs on every line written within one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def _traceparent(context: SpanContext) -> str:
    return (
        f"00-{trace.format_trace_id(context.trace_id)}-"
        f"{trace.format_span_id(context.span_id)}-{context.trace_flags:02x}"
    )
