"""Starting this service's own spans, and annotating the current one, at no cost when
tracing is off: a component handed no tracer starts none, and an annotation of no span
(the API's invalid span records nothing) is one context lookup."""

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue


def start_span(
    tracer: Tracer | None, name: str, **options: Any
) -> AbstractContextManager[Span | None]:
    """`tracer`'s span `name`, current within the block (options as `start_as_current_span`
    takes them), or nothing without a tracer."""
    if tracer is None:
        return nullcontext()
    return tracer.start_as_current_span(name, **options)


def start_child_span(
    tracer: Tracer | None, name: str, **options: Any
) -> AbstractContextManager[Span | None]:
    """As `start_span`, for a part of the current span, started only if that span is being
    recorded: a request left out of the sample costs no span for each of its parts."""
    if tracer is None or not trace.get_current_span().is_recording():
        return nullcontext()
    return tracer.start_as_current_span(name, **options)


def annotate(attributes: Mapping[str, AttributeValue | None]) -> None:
    """Set `attributes` (those not None) on the current span, if one is being recorded."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})


def mark_failed(exc: BaseException) -> None:
    """The current span failed with `exc`, though it was handled: its class, never its text."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(StatusCode.ERROR)
