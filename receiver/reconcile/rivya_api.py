"""Rivya's API, as reconciliation calls it: a generation's status, and the credit balance.

One aiohttp session for the component, every call paced to `RECEIVER_RIVYA_API_RATE`
requests a second (Rivya asks clients to poll slowly), and every answer but the expected
one turned into this module's own failures, drawn here as httpx draws its own:

    RivyaAPIError                 base; `code` is short and safe to log
    ├── RivyaAuthError            401/403: the key is missing, invalid, revoked or lacks a scope
    ├── RivyaNotFoundError        404 on a generation: no such task on this account
    ├── RivyaUnavailableError     429, 5xx, a timeout or no connection, after the retries
    └── RivyaResponseError        a 2xx whose body is not what Rivya documents

A 429 or 5xx is retried, after the `Retry-After` Rivya gives (else a doubling pause), and the
pause holds every call of the session, not only the one that met it.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import SecretStr

from receiver.outbound import open_session, parse_retry_after

# Tries of one call before Rivya counts as unavailable for this pass.
TRIES = 3
FIRST_BACKOFF_SECONDS = 1.0
# A Retry-After longer than this ends the pass instead: the next pass comes sooner.
MAX_WAIT_SECONDS = 60.0
# A generation is a few KiB; 1 MiB leaves room for thousands of result URLs and bounds what
# one answer, or an error page in its place, can cost in memory.
MAX_ANSWER_BYTES = 1_048_576


class RivyaAPIError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class RivyaAuthError(RivyaAPIError):
    pass


class RivyaNotFoundError(RivyaAPIError):
    pass


class RivyaUnavailableError(RivyaAPIError):
    pass


class RivyaResponseError(RivyaAPIError):
    pass


class Pacer:
    """At most `rate` calls a second, spaced evenly, shared by every caller of the session."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = max(time.monotonic(), self._next) + self._interval

    def hold(self, seconds: float) -> None:
        """No call before `seconds` from now (Rivya asked us to wait)."""
        self._next = max(self._next, time.monotonic() + seconds)


class RivyaAPI:
    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        rate: float,
        timeout_seconds: float,
        on_request: Callable[[str], None] | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        """`on_request(status)` is told of every call: its HTTP status, or `timeout` or
        `connection_error` (the metrics); `trace_configs` trace each call."""
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._pacer = Pacer(rate)
        self._timeout_seconds = timeout_seconds
        self._on_request = on_request
        self._trace_configs = trace_configs
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "RivyaAPI":
        self._session = open_session(self._timeout_seconds, trace_configs=self._trace_configs)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def generation(self, task_id: str) -> dict[str, Any]:
        """The generation object, as Rivya returns it."""
        answer = await self._get(f"/generations/{quote(task_id, safe='')}")
        if not isinstance(answer, dict):
            raise RivyaResponseError("not_an_object")
        return answer

    async def credits(self) -> int:
        answer = await self._get("/credits")
        balance = answer.get("current_credits") if isinstance(answer, dict) else None
        if isinstance(balance, bool) or not isinstance(balance, int):
            raise RivyaResponseError("invalid_credits")
        return balance

    async def _get(self, path: str) -> Any:
        session = self._session
        if session is None:
            raise RuntimeError("the API client is used outside its context")
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, TRIES + 1):
            await self._pacer.wait()
            try:
                status, retry_after, body = await self._call(session, path)
            except TimeoutError:
                status, retry_after, body, failure = None, None, b"", "timeout"
            except aiohttp.ClientError:
                status, retry_after, body, failure = None, None, b"", "connection_error"
            else:
                failure = str(status)
            if self._on_request is not None:
                self._on_request(failure)
            if status is not None and 200 <= status < 300:
                return _json(body)
            if status in (401, 403):
                raise RivyaAuthError(_error_code(body) or f"http_{status}")
            if status == 404:
                raise RivyaNotFoundError(_error_code(body) or "not_found")
            if status is not None and status != 429 and status < 500:
                raise RivyaResponseError(_error_code(body) or f"http_{status}")
            wait = parse_retry_after(retry_after, datetime.now(UTC)) or backoff
            if attempt == TRIES or wait > MAX_WAIT_SECONDS:
                break
            self._pacer.hold(wait)
            backoff *= 2
        raise RivyaUnavailableError(failure if status is None else f"http_{status}")

    async def _call(
        self, session: aiohttp.ClientSession, path: str
    ) -> tuple[int, str | None, bytes]:
        headers = {"authorization": f"Bearer {self._api_key.get_secret_value()}"}
        async with session.get(
            self._base_url + path, headers=headers, allow_redirects=False
        ) as response:
            body = await _read_capped(response.content, MAX_ANSWER_BYTES + 1)
            return response.status, response.headers.get("retry-after"), body


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """At most `limit` bytes of the body. One `read(limit)` is not that: it returns the bytes
    that have arrived so far, so an answer longer than its first chunk came back cut short
    (and failed as broken JSON) however far under the cap it was."""
    body = bytearray()
    while len(body) < limit and (chunk := await stream.read(limit - len(body))):
        body += chunk
    return bytes(body)


def _json(body: bytes) -> Any:
    if len(body) > MAX_ANSWER_BYTES:
        raise RivyaResponseError("answer_too_large")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RivyaResponseError("invalid_json") from None


def _error_code(body: bytes) -> str | None:
    """Rivya's error code (`{"error": {"code": ...}}`), if the body has a usable one: it is
    logged, so only a short word of letters, digits and underscores."""
    try:
        error = orjson.loads(body).get("error")
        code = error.get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(code, str) and 0 < len(code) <= 64 and code.replace("_", "").isalnum():
        return code if code.isascii() else None
    return None
