"""POST /webhooks/rivya: verify, parse, store durably, then answer.

A plain ASGI app rather than a Starlette request handler, because this is the one path
that carries load: Starlette's Request, Response and body-limit layers cost about a fifth
of a request's time here (measured), and the endpoint needs none of what they add. The
exceptions it raises are answered by the same translation as everywhere else
(`receiver.responses.answer_error`).

Every check that can refuse a delivery runs before anything is stored, in this order: the
declared size (413, before reading), a repeated header (401), the media type (415), the
body's size and deadline as it is read (413, 408), the signature (401).
"""

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
import structlog
from opentelemetry import trace
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from receiver.bodies import read_body, refuse_declared_size
from receiver.exceptions import InvalidHeaderError, ReceiverError, UnsupportedMediaTypeError
from receiver.ingest.envelope import parse_event
from receiver.model import Outcome
from receiver.responses import answer_disconnect, answer_error
from receiver.services import Services, services_in
from receiver.store.events import Submission
from receiver.tracing.carriers import carrier_of
from receiver.tracing.spans import annotate, start_child_span

USED_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"webhook-id",
        b"webhook-timestamp",
        b"webhook-signature",
    }
)


class RivyaWebhookEndpoint:
    """The route's ASGI app (Starlette treats a class instance as one, not as a handler)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = services_in(scope)
        # Tracing off, the span is not even looked up: this path carries the load.
        traced = services.tracing is not None
        try:
            content = await _ingest(services, scope, receive)
        except ReceiverError as exc:
            answer = answer_error(exc)
            if traced:
                refused = _refused_as(answer.status_code)
                annotate({"receiver.outcome": refused, "error.type": type(exc).__name__})
        except ClientDisconnect:
            answer = answer_disconnect()
        else:
            if traced:
                annotate({"receiver.outcome": content["status"]})
            await _answer(send, 200, content, None)
            return
        await _answer(send, answer.status_code, answer.content, answer.headers)


async def _answer(
    send: Send, status_code: int, content: dict[str, str], headers: dict[str, str] | None
) -> None:
    body = orjson.dumps(content)
    raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    raw += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status_code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _ingest(services: Services, scope: Scope, receive: Receive) -> dict[str, str]:
    settings = services.settings
    headers, repeated = _used_headers(scope["headers"])
    refuse_declared_size(headers.get("content-length"), settings.max_body_bytes)
    if repeated:
        raise InvalidHeaderError(f"{repeated} is given more than once")
    _require_json(headers.get("content-type", ""))
    body = await read_body(receive, settings.max_body_bytes, settings.request_timeout_seconds)
    tracer = services.tracing.tracer if services.tracing else None
    with start_child_span(tracer, "receiver.verify"):
        message = services.verifier.verify(body, headers)
    event = parse_event(body, message.msg_id)
    structlog.contextvars.bind_contextvars(
        event_id=event.event_id,
        event_type=event.type,
        task_id=event.generation.task_id if event.generation else None,
        reason=event.quarantine_reason,
    )
    # The request's own span stores the event: its deliveries' attempts are its children.
    request = trace.get_current_span() if tracer else None
    if request is not None:
        annotate({"receiver.event_id": event.event_id, "receiver.event_type": event.type})
    submission = Submission(
        event=event,
        msg_id=message.msg_id,
        body=body,
        received_at=datetime.now(UTC),
        trace=carrier_of(request),
    )
    with start_child_span(tracer, "receiver.store.wait"):
        outcome = await services.writer.submit(
            submission, request.get_span_context() if request else None
        )
    structlog.contextvars.bind_contextvars(outcome=outcome or "duplicate")
    return {"status": _status_of(outcome), "event_id": event.event_id}


def _status_of(outcome: Outcome | None) -> str:
    if outcome is None:
        return "duplicate"
    return "quarantined" if outcome is Outcome.QUARANTINED else "accepted"


def _refused_as(status_code: int) -> str:
    return "unavailable" if status_code == 503 else "rejected"


def _require_json(content_type: str) -> None:
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError("the body must be application/json")


def _used_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], str | None]:
    """The headers this endpoint reads, in one pass over the raw ones (ASGI lowercases
    their names), and the first one given twice, if any. A repeated signature header is
    ambiguous (which one was signed?), so the caller refuses it rather than guess."""
    used: dict[str, str] = {}
    repeated = None
    for name, value in raw:
        if name not in USED_HEADERS:
            continue
        key = name.decode()
        if key in used:
            if key != "content-type":
                repeated = repeated or key
            continue
        used[key] = value.decode("latin-1")
    return used, repeated
