"""POST /webhooks/rivya: verify, parse, store durably, then answer.

The body limit is the route's (413 before the body is read when Content-Length says so).
Every check that can refuse a delivery runs before anything is stored.
"""

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from starlette.requests import Request
from starlette.responses import Response

from receiver.exceptions import (
    InvalidHeaderError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from receiver.ingest.envelope import parse_event
from receiver.responses import ORJSONResponse
from receiver.services import services_of
from receiver.store.events import Outcome, Submission

USED_HEADERS = frozenset(
    {b"content-type", b"webhook-id", b"webhook-timestamp", b"webhook-signature"}
)


async def receive_rivya_event(request: Request) -> Response:
    services = services_of(request)
    headers = _used_headers(request.scope["headers"])
    _require_json(headers.get("content-type", ""))
    body = await _read_body(request, services.settings.request_timeout_seconds)
    message = services.verifier.verify(body, headers)
    event = parse_event(body, message.msg_id)
    structlog.contextvars.bind_contextvars(
        event_id=event.event_id,
        event_type=event.type,
        task_id=event.generation.task_id if event.generation else None,
        reason=event.quarantine_reason,
    )
    outcome = await services.writer.submit(
        Submission(event=event, msg_id=message.msg_id, body=body, received_at=datetime.now(UTC))
    )
    structlog.contextvars.bind_contextvars(outcome=outcome or "duplicate")
    return ORJSONResponse({"status": _status_of(outcome), "event_id": event.event_id})


async def _read_body(request: Request, timeout_seconds: float) -> bytes:
    # uvicorn bounds neither how long a body may take nor how many connections wait for
    # one: a sender dripping a byte at a time must not hold a request open for ever.
    try:
        async with asyncio.timeout(timeout_seconds):
            return await request.body()
    except TimeoutError:
        raise RequestTimeoutError(f"the body took longer than {timeout_seconds:g} s") from None


def _status_of(outcome: Outcome | None) -> str:
    if outcome is None:
        return "duplicate"
    return "quarantined" if outcome is Outcome.QUARANTINED else "accepted"


def _require_json(content_type: str) -> None:
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError("the body must be application/json")


def _used_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers this endpoint reads, in one pass over the raw ones (ASGI lowercases
    their names). A repeated signature header is ambiguous (which one was signed?), so it
    is refused rather than guessed at."""
    used: dict[str, str] = {}
    for name, value in raw:
        if name not in USED_HEADERS:
            continue
        key = name.decode()
        if key in used:
            if key == "content-type":
                continue
            raise InvalidHeaderError(f"{key} is given more than once")
        used[key] = value.decode("latin-1")
    return used
