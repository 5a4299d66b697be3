"""HTTP spans by the official instrumentations: a server span for every request this service
answers (ASGI), and a client span for every call to Rivya's API (aiohttp-client).

A request's span is named by its route's template (`GET /admin/events/{event_id}`), never
its path, so names stay few whatever IDs callers send. An incoming `traceparent` is our
parent only when RECEIVER_TRACE_TRUST_INCOMING is true: otherwise anyone who can reach the
port could choose our trace IDs (and so where our spans land, and which are sampled), so it
is removed before the instrumentation reads it and kept as a link instead.

Queries are not recorded (`_drop_query`). No header is recorded unless an operator asks,
through the instrumentations' own OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* variables;
even then the values of those that authenticate (the admin token, the console's cookie, a
webhook's signature, the API key) are replaced with `[REDACTED]`.
"""

from collections.abc import Sequence
from typing import Any

import aiohttp
from opentelemetry.trace import Span
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.tracing.carriers import Carrier, span_context_of
from receiver.tracing.pipeline import Tracing

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
# Regular expressions, matched against header names, whose values are never recorded.
SECRET_HEADERS = ["authorization", "cookie", "set-cookie", "webhook-signature", "x-csrf-token"]
# Where the untrusted incoming context waits for the server span to link it.
_INCOMING = "receiver.incoming_trace"
# Where the instrumentation writes a request's query, by HTTP semantic conventions old and new.
QUERY_ATTRIBUTES = ("http.target", "http.url", "url.query")
# Probes and scrapes, every few seconds each, would bury the requests worth a look.
UNTRACED_PATHS = "/healthz$,/readyz$,/metrics$"


class TraceRequests:
    """ASGI middleware: the instrumentation's server span around each request."""

    def __init__(self, app: ASGIApp, tracing: Tracing, routes: Sequence[BaseRoute]) -> None:
        # Imported only with tracing on: the instrumentations import the SDK's global
        # propagators, which read OTEL_PROPAGATORS (checked by start_tracing) as they load.
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        self._routes = routes
        self._trust = tracing.trust_incoming
        self._traced = OpenTelemetryMiddleware(
            app,
            excluded_urls=UNTRACED_PATHS,
            tracer_provider=tracing.provider,
            default_span_details=self._span_details,
            server_request_hook=_on_request,
            # Its spans around every receive() and send() would double the spans of a
            # request for what the server span's duration already tells.
            exclude_spans=["receive", "send"],
            http_capture_headers_sanitize_fields=SECRET_HEADERS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._trust:
            scope = _untrusted(scope)
        await self._traced(scope, receive, send)

    def _span_details(self, scope: Scope) -> tuple[str, dict[str, Any]]:
        method = scope.get("method", "HTTP")
        route = route_of(self._routes, scope)
        if route is None:
            return method, {}
        return f"{method} {route}", {"http.route": route}


def rivya_trace_configs(tracing: Tracing | None) -> list[aiohttp.TraceConfig]:
    """The aiohttp-client instrumentation for Rivya's API session, or none."""
    if tracing is None:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [
        create_trace_config(
            tracer_provider=tracing.provider,
            sensitive_headers=SECRET_HEADERS,
        )
    ]


def route_of(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """The template of the route `scope` reaches, mounts included, or None."""
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            inner = route_of(route.routes, {**scope, **child})
            return route.path + (inner or "")
        return str(getattr(route, "path", "")) or None
    return None


def _untrusted(scope: Scope) -> Scope:
    """`scope` without the trace headers, holding what they said for `_link_incoming`."""
    headers = scope["headers"]
    if not any(name in TRACE_HEADERS for name, _ in headers):
        return scope
    sent = {
        name.decode(): value.decode("latin-1") for name, value in headers if name in TRACE_HEADERS
    }
    incoming = None
    if "traceparent" in sent:
        # Without its tracestate, which a link does not need: OpenTelemetry's parser logs a
        # warning quoting each member it cannot read, so any caller could write our logs.
        incoming = span_context_of(Carrier(sent["traceparent"]))
    return {
        **scope,
        "headers": [(name, value) for name, value in headers if name not in TRACE_HEADERS],
        _INCOMING: incoming,
    }


def _on_request(span: Span, scope: Scope) -> None:
    if (incoming := scope.get(_INCOMING)) is not None:
        span.add_link(incoming, {"receiver.link": "untrusted_traceparent"})
    if scope.get("query_string"):
        _drop_query(span)


def _drop_query(span: Span) -> None:
    """The request's URL without its query: callers fill queries with anything (a console
    search, a signed notice), and the route and path already say what was asked."""
    recorded = getattr(span, "attributes", None) or {}
    for key in QUERY_ATTRIBUTES:
        if isinstance(value := recorded.get(key), str):
            span.set_attribute(key, "" if key == "url.query" else value.partition("?")[0])
