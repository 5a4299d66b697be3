"""A subscriber for test sends: a real HTTP server on loopback that checks each request's
signature with the `standardwebhooks` package and answers with a status, headers and a
body of the test's choosing, or hangs."""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Pinged:
    headers: dict[str, str]
    body: bytes
    # What `standardwebhooks` read from the verified body; None if it did not verify.
    verified: dict[str, Any] | None


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Sent as the declared length (more than `body` holds: the rest never comes).
    declared_length: int | None = None
    # Seconds to wait before answering (released early when the sink stops).
    hang: float = 0.0


class AnsweringSink:
    def __init__(self, secret: str, answer: Answer) -> None:
        self.answer = answer
        self.received: list[Pinged] = []
        self._released = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verified = Webhook(secret).verify(body, headers)
                except Exception:  # noqa: BLE001 - any failure to verify is recorded as None
                    verified = None
                sink.received.append(Pinged(headers, body, verified))
                answer = sink.answer
                if answer.hang and sink._released.wait(answer.hang):
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                length = answer.declared_length or len(answer.body)
                self.send_header("content-length", str(length))
                self.end_headers()
                self.wfile.write(answer.body)
                self.wfile.flush()
                if answer.declared_length:
                    # Hold the connection open, the rest of the body unsent.
                    sink._released.wait(30)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
