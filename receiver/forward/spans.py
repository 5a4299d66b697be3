"""The span of a delivery attempt: a client span, a child of the span that stored the event,
in whichever process and however long ago; for a replay, a child of the replay's span (or,
queued untraced, the root of a trace of its own), linked to the event's. An event stored
untraced starts a trace of its own.

The attempt's `traceparent` (and `tracestate`) go with it (`carriers.headers_for`), so the
subscriber's own trace continues this one."""

from contextlib import AbstractContextManager

import yarl
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, StatusCode, Tracer

from receiver.destinations import Destination
from receiver.store.deliveries import ClaimedDelivery, DeliveryState
from receiver.tracing.carriers import context_of, span_context_of
from receiver.tracing.spans import start_span


def attempt_span(
    tracer: Tracer, destination: Destination, delivery: ClaimedDelivery
) -> AbstractContextManager[Span | None]:
    url = yarl.URL(delivery.target_url or destination.url)
    links = []
    parent = context_of(delivery.trace)
    if delivery.replayed:
        parent = context_of(delivery.replay_trace)
        if first := span_context_of(delivery.trace):
            links.append(Link(first, {"receiver.link": "replay_of"}))
    return start_span(
        tracer,
        "receiver.deliver",
        kind=SpanKind.CLIENT,
        # An empty context, not the current one: the attempt's task has none of its own.
        context=parent or Context(),
        links=links,
        attributes={
            "receiver.destination": destination.name,
            "receiver.delivery.id": delivery.id,
            "receiver.delivery.attempt": delivery.attempts_made + 1,
            "receiver.event_id": delivery.event_id,
            "http.request.method": "POST",
            # The host and port alone: a destination's path or query may hold a token.
            "server.address": url.host or "",
            "server.port": url.port or 0,
        },
    )


def record_outcome(
    span: Span | None, status_code: int | None, error_class: str | None, state: DeliveryState
) -> None:
    if span is None:
        return
    span.set_attribute("receiver.delivery.state", state.value)
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if state is not DeliveryState.DELIVERED:
        # As HTTP's conventions have it: the status code, or the failure's class.
        span.set_attribute("error.type", error_class or str(status_code))
        span.set_status(StatusCode.ERROR)
