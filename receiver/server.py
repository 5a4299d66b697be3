"""How `receiver serve` runs uvicorn, including the limits on slow clients that uvicorn
leaves out.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a
request's headers and no cap on their size when it parses with httptools: a client sending
a header line every few seconds holds its connection for ever, and one that never ends its
headers grows the process's memory without bound (measured: 100 MB of header lines added
about 100 MB of RSS). The protocol below adds both limits. The body's deadline is the
ingest endpoint's own (`receiver.ingest.webhooks`), with the same number of seconds.

What stays unlimited, on purpose: concurrent connections (`limit_concurrency`), because
uvicorn answers 503 to every request over that limit, Rivya's included, so a cap would hand
an attacker the outage it wants; a connection that is waiting costs little memory, and the
deadlines close it. The listen backlog stays at uvicorn's 2048.
"""

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.metrics import loopback_app

MAX_HEADER_BYTES = 64 * 1024


class HeadersTooLargeError(Exception):
    """Stops the parser once the headers are refused."""


def serve_options(request_timeout_seconds: float) -> dict[str, Any]:
    """uvicorn's keyword arguments (the benchmark's bare endpoint runs the same way)."""
    return {
        "http": limited_http_protocol(request_timeout_seconds),
        "log_config": None,  # configure_logging routes uvicorn's records through ours
        "access_log": False,  # RequestLogMiddleware writes the one line per request
        "server_header": False,
        # No route speaks WebSocket: an upgrade is refused as any unknown request is.
        "ws": "none",
        "timeout_keep_alive": 5,
        # A stop waits this long for requests in flight, which the request deadlines
        # already bound, then cancels them; none of them was acknowledged.
        "timeout_graceful_shutdown": 2 * request_timeout_seconds,
    }


def run_server(
    app: Starlette, host: str, port: int, metrics_port: int | None, **options: Any
) -> None:
    """Serve `app`; with `metrics_port`, also its /metrics, open, on 127.0.0.1:metrics_port,
    from the same process and loop (one registry, one engine). The main listener owns the
    signals and the lifespan; the metrics listener stops when it does."""
    if metrics_port is None:
        uvicorn.run(app, host=host, port=port, **options)
        return
    main = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    beside = _MetricsServer(
        uvicorn.Config(
            loopback_app(app),
            host="127.0.0.1",
            port=metrics_port,
            lifespan="off",
            **options,
        )
    )
    # As uvicorn.run does: Ctrl-C, which uvicorn re-raises once the servers have stopped,
    # is a stop like SIGTERM, not a failure (it was click's "Aborted!" and exit 1).
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=main.config.get_loop_factory()) as runner,
    ):
        runner.run(_serve_both(main, beside))
    if not main.started:
        sys.exit(3)  # as uvicorn.run: the application failed to start


class _MetricsServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the main server's: one stop, for both


async def _serve_both(main: uvicorn.Server, beside: uvicorn.Server) -> None:
    metrics = asyncio.create_task(beside.serve())
    try:
        await main.serve()
    finally:
        beside.should_exit = True
        await metrics


def limited_http_protocol(request_timeout_seconds: float) -> type[HttpToolsProtocol]:
    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """Headers must end within `request_timeout_seconds` of the connection opening (or
        of the previous response) and within MAX_HEADER_BYTES, or the connection closes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes: int | None = None
            self._header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # Counted after parsing: a chunk that completes the headers may carry body too.
            if self._header_bytes is not None:
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._refuse(b"431 Request Header Fields Too Large")

        def on_headers_complete(self) -> None:
            self._headers_done()
            # A chunk can carry a whole request, too large headers and all.
            if len(self.url) + sum(len(n) + len(v) for n, v in self.headers) > MAX_HEADER_BYTES:
                self._refuse(b"431 Request Header Fields Too Large")
                raise HeadersTooLargeError
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            # After a refusal of ours, the parser's complaint about it needs no answer.
            if not self.transport.is_closing():
                super().send_400_response(msg)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_headers()

        def _await_headers(self) -> None:
            self._headers_done()
            self._header_bytes = 0
            self._header_deadline = self.loop.call_later(
                request_timeout_seconds, self._refuse, b"408 Request Timeout"
            )

        def _headers_done(self) -> None:
            self._header_bytes = None
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _refuse(self, status: bytes) -> None:
            self._headers_done()
            if not self.transport.is_closing():
                self.transport.write(
                    b"HTTP/1.1 " + status + b"\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
                )
                self.transport.close()

    return LimitedHttpToolsProtocol
