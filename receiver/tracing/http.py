"""HTTP spans: a server span for every request this service answers, and a client span for
every call to Rivya's API (the aiohttp-client instrumentation).

Server spans are the ASGI instrumentation's, but for the one path that carries load,
`POST /webhooks/rivya`, whose span is written here, as the endpoint itself is a plain ASGI
app rather than a Starlette handler (receiver.ingest.webhooks), and for the same reason:
the instrumentation's per-request work (its attributes, header scans, duration metrics and
send wrapper, done whether the span is sampled or not) cost 110 us a request unsampled and
260 us sampled, against a request's 140 us of its own (measured in-process); this span
records the HTTP conventions' stable attributes for a fraction of that.

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

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.tracing.carriers import Carrier, context_of, span_context_of
from receiver.tracing.pipeline import Tracing

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
# Regular expressions, matched against header names, whose values are never recorded.
SECRET_HEADERS = ["authorization", "cookie", "set-cookie", "webhook-signature", "x-csrf-token"]
# Where the untrusted incoming context waits for the server span to link it.
_INCOMING = "receiver.incoming_trace"
# Where the instrumentation writes a request's query, by HTTP semantic conventions old and new.
QUERY_ATTRIBUTES = ("http.target", "http.url", "url.query")
UNTRUSTED = {"receiver.link": "untrusted_traceparent"}
HTTP_SERVER_ERROR = 500
# Probes and scrapes, every few seconds each, would bury the requests worth a look.
# Matched against the request's URL (scheme, host, path), so anchored at both ends.
UNTRACED_PATHS = ",".join(rf"^[a-z]+://[^/]*/{path}$" for path in ("healthz", "readyz", "metrics"))


class TraceRequests:
    """ASGI middleware: a server span around each request, `ingest_path`'s our own."""

    def __init__(
        self, app: ASGIApp, tracing: Tracing, routes: Sequence[BaseRoute], ingest_path: str
    ) -> None:
        # Imported only with tracing on: the instrumentations import the SDK's global
        # propagators, which read OTEL_PROPAGATORS (checked by start_tracing) as they load.
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        self._app = app
        self._tracer = tracing.tracer
        self._ingest_path = ingest_path
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
            http_capture_headers_sanitize_fields=_secret_headers(),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
        elif scope["path"] == self._ingest_path:
            await self._ingest(scope, receive, send)
        else:
            await self._traced(
                _without_baggage(scope) if self._trust else _untrusted(scope), receive, send
            )

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        parent, links = self._incoming(scope["headers"])
        client = scope.get("client")
        span = self._tracer.start_span(
            f"{scope['method']} {self._ingest_path}",
            context=parent,
            kind=SpanKind.SERVER,
            links=links,
            attributes={
                "http.request.method": scope["method"],
                "http.route": self._ingest_path,
                "url.path": self._ingest_path,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", ""),
                "client.address": client[0] if client else "",
            },
        )
        status: int | None = None  # until an answer starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with trace.use_span(span, end_on_exit=True):
            try:
                await self._app(scope, receive, send_status)
            except asyncio.CancelledError:
                # A stop cancelled it before an answer (the SDK records Exceptions only).
                span.set_attribute("error.type", "CancelledError")
                raise
            finally:
                if status is not None and span.is_recording():
                    span.set_attribute("http.response.status_code", status)
                    if status >= HTTP_SERVER_ERROR:
                        span.set_status(StatusCode.ERROR)

    def _incoming(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[Context, list[Link]]:
        """The ingest span's parent (the caller's, when trusted) and links (when not)."""
        sent = _trace_headers(headers)
        if "traceparent" not in sent:
            return Context(), []
        if self._trust:
            context = context_of(Carrier(sent["traceparent"], sent.get("tracestate")))
            return context or Context(), []
        incoming = _caller_context(sent)
        return Context(), [Link(incoming, UNTRUSTED)] if incoming else []

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
            sensitive_headers=_secret_headers(),
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


def _secret_headers() -> list[str]:
    """SECRET_HEADERS, and those an operator names in the instrumentations' own variable."""
    from opentelemetry.util.http import (
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
        get_custom_headers,
    )

    named = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)
    return [*SECRET_HEADERS, *named]


def _without_baggage(scope: Scope) -> Scope:
    """A trusted caller's scope without its `baggage`: nothing here reads it, and kept in the
    context it would travel on to Rivya's API with the instrumentation's calls."""
    return _without(scope, frozenset({b"baggage"}))


def _untrusted(scope: Scope) -> Scope:
    """`scope` without the trace headers, holding what they said for `_on_request`."""
    sent = _trace_headers(scope["headers"])
    if not sent:
        return scope
    return {**_without(scope, TRACE_HEADERS), _INCOMING: _caller_context(sent)}


def _trace_headers(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {
        name.decode(): value.decode("latin-1") for name, value in headers if name in TRACE_HEADERS
    }


def _caller_context(sent: dict[str, str]) -> SpanContext | None:
    """An untrusted caller's context, to link to: from its `traceparent` alone. Its
    `tracestate` is not read: OpenTelemetry's parser logs a warning quoting each member it
    cannot read, so any caller could write our logs."""
    return span_context_of(Carrier(sent["traceparent"])) if "traceparent" in sent else None


def _without(scope: Scope, names: frozenset[bytes]) -> Scope:
    headers = scope["headers"]
    if not any(name in names for name, _ in headers):
        return scope
    return {**scope, "headers": [(name, value) for name, value in headers if name not in names]}


def _on_request(span: Span, scope: Scope) -> None:
    if (incoming := scope.get(_INCOMING)) is not None:
        span.add_link(incoming, UNTRUSTED)
    if scope.get("query_string"):
        _drop_query(span)


def _drop_query(span: Span) -> None:
    """The request's URL without its query: callers fill queries with anything (a console
    search, a signed notice), and the route and path already say what was asked."""
    recorded = getattr(span, "attributes", None) or {}
    for key in QUERY_ATTRIBUTES:
        if isinstance(value := recorded.get(key), str):
            span.set_attribute(key, "" if key == "url.query" else value.partition("?")[0])
