"""JSON responses, rendered with orjson, and the one translation of failures to statuses."""

from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from receiver.exceptions import (
    ConflictError,
    ForwardingDisabledError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ReceiverError,
    RejectedRequestError,
    RequestTimeoutError,
    SignatureError,
    StoppedPartWayError,
    StoreUnavailableError,
    TooManyPingsError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

RETRY_AFTER_SECONDS = 5

STATUS_BY_ERROR: dict[type[ReceiverError], int] = {
    SignatureError: 401,
    UnauthorizedError: 401,
    NotFoundError: 404,
    RequestTimeoutError: 408,
    InvalidRequestError: 400,
    ForwardingDisabledError: 409,
    ConflictError: 409,
    TooManyPingsError: 429,
    UnsupportedMediaTypeError: 415,
    PayloadTooLargeError: 413,
    StoreUnavailableError: 503,
    # Its own entry so that it gets no Retry-After: what it did stays done, and a replay
    # repeated whole would queue those deliveries again. The client reads the detail first.
    StoppedPartWayError: 503,
    RejectedRequestError: 400,
    # Unreachable by design; if it happens, the sender should retry rather than give up.
    ReceiverError: 503,
}
HEADERS_BY_ERROR: dict[type[ReceiverError], dict[str, str]] = {
    UnauthorizedError: {"www-authenticate": "Bearer"},
    RequestTimeoutError: {"connection": "close"},
    # Refused before the body was read: closing is how the rest of it goes unread.
    PayloadTooLargeError: {"connection": "close"},
    UnsupportedMediaTypeError: {"connection": "close"},
    StoreUnavailableError: {"retry-after": str(RETRY_AFTER_SECONDS)},
    TooManyPingsError: {"retry-after": str(RETRY_AFTER_SECONDS)},
    ReceiverError: {"retry-after": str(RETRY_AFTER_SECONDS)},
}


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status_code: int
    content: dict[str, str]
    headers: dict[str, str] | None


def answer_error(exc: ReceiverError) -> ErrorAnswer:
    """The answer to one of our failures (and its code bound for the request's log line)."""
    family = next(cls for cls in type(exc).__mro__ if cls in STATUS_BY_ERROR)
    code = getattr(exc, "code", "error")
    structlog.contextvars.bind_contextvars(reason=code)
    return ErrorAnswer(
        STATUS_BY_ERROR[family], {"error": code, "detail": str(exc)}, HEADERS_BY_ERROR.get(family)
    )


async def receiver_error(_: Request, exc: Exception) -> Response:
    answer = answer_error(cast(ReceiverError, exc))  # Starlette routes only these here
    return ORJSONResponse(answer.content, answer.status_code, answer.headers)


async def http_error(_: Request, exc: Exception) -> Response:
    exc = cast(HTTPException, exc)  # Starlette routes only these here
    return ORJSONResponse(
        {"error": "http_error", "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def answer_disconnect() -> ErrorAnswer:
    """The answer to a sender that hung up mid-body. Nobody reads it; it keeps the request
    from counting as a 500."""
    structlog.contextvars.bind_contextvars(reason="client_disconnected")
    return ErrorAnswer(400, {"error": "client_disconnected"}, None)


async def client_disconnected(_: Request, __: Exception) -> Response:
    answer = answer_disconnect()
    return ORJSONResponse(answer.content, answer.status_code, answer.headers)


EXCEPTION_HANDLERS = {
    ReceiverError: receiver_error,
    HTTPException: http_error,
    ClientDisconnect: client_disconnected,
}
