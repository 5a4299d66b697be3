"""Test sends: one signed `receiver.ping` event to a destination, and what it answered.

An operator wiring a new subscriber sends it one event and sees its answer: the status (or
why there was none, in `failures`' words), the time, and the start of its body. The event
goes through the one signing and HTTP path deliveries take (`forward.sending`: the
destination's secrets, no redirects followed) under the forwarding timeout, whatever the
destination's filters and whether it is disabled, and is never stored: no event, delivery
or attempt, nothing in the destination's health or the delivery metrics.

This is the only place a subscriber's body is ever shown. It is read as at most
`SHOWN_BODY_BYTES` (never the whole of it: the rest is left unread and the connection
closed), shown escaped, and never logged: the one log line, `audit`, says who pinged which
destination and the status.
"""

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from receiver.destinations import Destination
from receiver.exceptions import TooManyPingsError
from receiver.forward.failures import describe_failure
from receiver.forward.sending import post, signed_headers
from receiver.logs import log
from receiver.model import OPERATIONAL_ID_PREFIX
from receiver.operational.events import SOURCE
from receiver.outbound import open_session

PING_TYPE = "receiver.ping"
# Enough for a framework's error page to say what went wrong (its title, a JSON error
# object); the figure. A body is the subscriber's to make, so no more is read.
SHOWN_BODY_BYTES = 512
# Pings in flight at once, per process: each holds an outbound connection for up to the
# forwarding timeout (10 s by default), and a test send is one operator's click, not load.
# Four lets a team try a few destinations at once; beyond it, 429.
MAX_PINGS_IN_FLIGHT = 4
# Bytes shown as themselves: printable ASCII, and the line breaks and tabs that lay out an
# error page. A carriage return (which rewrites a terminal's line), every other control
# byte and every non-ASCII byte is shown as \xNN, and a backslash as \\, so that what is
# shown reads back to the bytes exactly.
_KEPT = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A}


@dataclass(frozen=True, slots=True)
class PingAnswer:
    destination: str
    event_id: str
    # None when no answer came; then `error_class` says why.
    status_code: int | None
    error_class: str | None
    duration_ms: float
    # The first SHOWN_BODY_BYTES of the answer, escaped (`escape_body`).
    body: str
    # True when the body went on past what is shown (or had not ended).
    body_truncated: bool

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def failure(self) -> str | None:
        """Why it is not a success, in words: "HTTP 500", "timed out after 10 s"."""
        return describe_failure(self.error_class, self.status_code, self.duration_ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "event_id": self.event_id,
            "ok": self.ok,
            "http_status": self.status_code,
            "failure": self.failure,
            "error_class": self.error_class,
            "duration_ms": self.duration_ms,
            "body": self.body,
            "body_truncated": self.body_truncated,
        }


def ping_body(destination: Destination, event_id: str, now: datetime) -> bytes:
    """The event: Rivya's envelope keys, as the operational events are written."""
    return orjson.dumps(
        {
            "id": event_id,
            "type": PING_TYPE,
            "api_version": None,
            "created_at": now.isoformat(),
            "source": SOURCE,
            "data": {"destination": destination.name},
        }
    )


def escape_body(raw: bytes) -> str:
    return "".join(
        "\\\\" if byte == 0x5C else chr(byte) if byte in _KEPT else f"\\x{byte:02x}" for byte in raw
    )


async def send_ping(session: aiohttp.ClientSession, destination: Destination) -> PingAnswer:
    """One ping through `session` (whose timeout bounds the whole of it, body included)."""
    event_id = f"{OPERATIONAL_ID_PREFIX}ping:{secrets.token_hex(12)}"
    body = ping_body(destination, event_id, datetime.now(UTC))
    headers = signed_headers(destination, event_id, body)
    status_code: int | None = None
    error_class: str | None = None
    raw = b""
    truncated = False
    started = time.perf_counter()
    try:
        async with post(session, destination.url, body, headers) as response:
            status_code = response.status
            raw, truncated = await _read_start(response.content)
    except Exception as exc:  # noqa: BLE001 - whatever failed, it is the answer shown
        error_class = type(exc).__name__
    return PingAnswer(
        destination=destination.name,
        event_id=event_id,
        status_code=status_code,
        error_class=error_class,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        body=escape_body(raw),
        body_truncated=truncated,
    )


async def _read_start(content: aiohttp.StreamReader) -> tuple[bytes, bool]:
    """At most SHOWN_BODY_BYTES of the body, and whether more is there or may follow. A
    body cut off or timed out part-way shows what had arrived."""
    raw = b""
    try:
        while len(raw) < SHOWN_BODY_BYTES:
            chunk = await content.read(SHOWN_BODY_BYTES - len(raw))
            if not chunk:
                break
            raw += chunk
    except (aiohttp.ClientError, TimeoutError):
        return raw, True
    return raw, not content.at_eof()


class Pinger:
    """The process's test sends: one session of their own (made where the component
    starts, closed where it ends), and at most MAX_PINGS_IN_FLIGHT at once."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0

    async def __aenter__(self) -> "Pinger":
        self._session = open_session(self._timeout, connections=MAX_PINGS_IN_FLIGHT)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def ping(self, destination: Destination, who: str) -> PingAnswer:
        if self._session is None:
            raise RuntimeError("the pinger is used outside its context")
        if self._in_flight >= MAX_PINGS_IN_FLIGHT:
            raise TooManyPingsError(
                f"{MAX_PINGS_IN_FLIGHT} test sends are in flight: try again in a few seconds"
            )
        self._in_flight += 1
        try:
            answer = await send_ping(self._session, destination)
        finally:
            self._in_flight -= 1
        log.info(
            "audit",
            who=who,
            what="ping",
            destination=destination.name,
            http_status=answer.status_code,
            error_class=answer.error_class,
            duration_ms=answer.duration_ms,
        )
        return answer
