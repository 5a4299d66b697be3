"""A real loopback HTTP endpoint for Apprise's `json://` scheme: records each message it is
sent (title, message, type, and the headers) and answers 200, 500, or hangs.

Its URL carries a token-like path and a header (`+X-Token=`), as a chat webhook's does, so
tests can scan everything the service wrote for either.
"""

import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

OK = "ok"
ERROR = "error"
HANG = "hang"
# Longer than any try a test gives the notifier; a hung request ends when the test stops.
HANG_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Sent:
    title: str
    message: str
    type: str
    headers: dict[str, str]


class NotifyEndpoint:
    def __init__(self, mode: str = OK) -> None:
        self.mode = mode
        self.token = "tok" + secrets.token_hex(12)
        self.header_token = "hdr" + secrets.token_hex(12)
        self.requests = 0
        self.received: list[Sent] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with endpoint._lock:
                    endpoint.requests += 1
                if endpoint.mode == HANG:
                    endpoint._released.wait(HANG_SECONDS)
                    self.close_connection = True
                    return
                payload: dict[str, Any] = orjson.loads(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if endpoint.mode == OK:
                    with endpoint._lock:
                        endpoint.received.append(
                            Sent(payload["title"], payload["message"], payload["type"], headers)
                        )
                self.send_response(200 if endpoint.mode == OK else 500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, **params: str) -> str:
        """Its Apprise URL; `params` are Apprise's (`rto="0.5"`)."""
        query = "&".join(
            [f"+X-Token={self.header_token}", *(f"{k}={v}" for k, v in params.items())]
        )
        return f"json://127.0.0.1:{self.port}/hook/{self.token}?{query}"

    def secrets(self) -> tuple[str, str]:
        return self.token, self.header_token

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` requests came in, answered or not (a hanging one is held)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.requests >= count:
                    return
            time.sleep(0.01)
        raise AssertionError(f"{count} requests expected, {self.requests} came")

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Sent]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{count} messages expected, {len(self.received)} came")

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
