"""POST /webhooks/rivya: verify, parse, store durably, then answer.

The body limit is the route's (413 before the body is read when Content-Length says so).
Every check that can refuse a delivery runs before anything is stored.
"""

from datetime import UTC, datetime

import structlog
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from receiver.exceptions import InvalidHeaderError, UnsupportedMediaTypeError
from receiver.ingest.envelope import parse_event
from receiver.responses import ORJSONResponse
from receiver.services import services_of
from receiver.store.events import Outcome, Submission

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


async def receive_rivya_event(request: Request) -> Response:
    services = services_of(request)
    _require_json(request.headers)
    headers = _signature_headers(request.headers)
    body = await request.body()
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


def _status_of(outcome: Outcome | None) -> str:
    if outcome is None:
        return "duplicate"
    return "quarantined" if outcome is Outcome.QUARANTINED else "accepted"


def _require_json(headers: Headers) -> None:
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError("the body must be application/json")


def _signature_headers(headers: Headers) -> dict[str, str]:
    # A repeated header is ambiguous: which one was signed? Refuse rather than guess.
    single = {}
    for name in SIGNATURE_HEADERS:
        values = headers.getlist(name)
        if len(values) > 1:
            raise InvalidHeaderError(f"{name} is given more than once")
        if values:
            single[name] = values[0]
    return single
