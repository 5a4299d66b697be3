"""Reading a request's body, bounded in size and in time: the one reader of every route
that reads a body (the webhook endpoint, the console's forms, the admin API's JSON).

uvicorn bounds neither how large a body may be nor how long it may take, and Starlette's
`Request.body()` and `Request.form()` take whatever comes (its form parser allows 1,000
fields of 1 MiB each and spools file parts to disk). So every reader names its cap: a
declared length over it is refused before reading (413), the body is counted as it
arrives and reading stops at the first chunk past the cap (413), and the whole body must
arrive within RECEIVER_REQUEST_TIMEOUT_SECONDS (408, and the connection closes). A route
that reads no body (the probes, `/metrics`, every GET) leaves it unread; uvicorn stops
reading a connection whose body the app does not take, so that costs nothing either.

Plain ASGI (`receive`), so that the webhook endpoint keeps its path free of Starlette's
Request; `read_small_body` is the same reader for a Starlette handler.
"""

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from receiver.exceptions import PayloadTooLargeError, RequestTimeoutError
from receiver.services import services_of

# The console's forms and the admin API's JSON bodies: a CSRF token, a sign-in token, a
# filter or a task ID, a few hundred bytes each. 64 KiB is a hundred times the largest,
# and a thousand requests held at once under it still hold no more than 64 MiB.
SMALL_BODY_BYTES = 64 * 1024


def refuse_declared_size(content_length: str | None, max_bytes: int) -> None:
    """413 before reading a body whose declared length is too large."""
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise PayloadTooLargeError(f"the body is over {max_bytes} bytes")


async def read_body(receive: Receive, max_bytes: int, timeout_seconds: float) -> bytes:
    # A sender dripping a byte at a time must not hold a request open for ever.
    try:
        async with asyncio.timeout(timeout_seconds):
            return await _receive_body(receive, max_bytes)
    except TimeoutError:
        raise RequestTimeoutError(f"the body took longer than {timeout_seconds:g} s") from None


async def read_small_body(request: Request) -> bytes:
    """A Starlette handler's body, under SMALL_BODY_BYTES and the request deadline."""
    refuse_declared_size(request.headers.get("content-length"), SMALL_BODY_BYTES)
    timeout_seconds = services_of(request).settings.request_timeout_seconds
    return await read_body(request.receive, SMALL_BODY_BYTES, timeout_seconds)


async def _receive_body(receive: Receive, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"the body is over {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
