"""What the tests share: Rivya-shaped events, signed by the independent `standardwebhooks`
package, and a real `receiver serve` process on a free loopback port."""

import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

from receiver.destinations import DEFAULT_NAME, Destination
from receiver.signatures import WebhookSecret
from tests.cli_processes import run_forked

# One client for the suite's requests: a client of its own per request (`httpx.post`) builds
# an SSL context each time, 50 ms here, which thousands of requests turned into minutes.
# No keep-alive, so each request still opens its own connection, as before.
HTTP = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def new_secret() -> str:
    return WebhookSecret.generate().reveal()


def destination(
    name: str = DEFAULT_NAME,
    url: str = "http://127.0.0.1:9/hooks",
    secret: str | None = None,
    event_types: set[str] | None = None,
    outcomes: set[str] | None = None,
    max_in_flight: int = 32,
) -> Destination:
    """A destination as the configuration would make it; by default, one with no filters."""
    return Destination(
        name=name,
        url=url,
        signing_secrets=(WebhookSecret.parse(secret) if secret else WebhookSecret.generate(),),
        event_types=frozenset(event_types) if event_types is not None else None,
        outcomes=frozenset(outcomes) if outcomes is not None else None,
        max_in_flight=max_in_flight,
    )


def write_destinations(path: Path, *tables: dict[str, Any], mode: int = 0o600) -> str:
    """A RECEIVER_DESTINATIONS_FILE of these `[[destinations]]` tables; its path."""
    lines = []
    for table in tables:
        lines.append("[[destinations]]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(mode)
    return str(path)


def only(file: str) -> dict[str, str]:
    """Settings for a server with the file's destinations and no `default`."""
    return {"forward_url": "", "forward_signing_secrets": "", "destinations_file": file}


def _toml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value) if isinstance(value, int) else orjson.dumps(value).decode()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    event_type: str = "generation.succeeded",
    *,
    event_id: str | None = None,
    task_id: str | None = None,
    updated_at: datetime | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Rivya event as its docs show it, with an unknown field Rivya may add any time."""
    updated_at = updated_at or datetime.now(UTC)
    succeeded = event_type != "generation.failed"
    url = f"https://media.example/{secrets.token_hex(8)}.png?sig={secrets.token_hex(8)}"
    generation = {
        "id": task_id or f"task_{secrets.token_hex(8)}",
        "status": "succeeded" if succeeded else "failed",
        "model": "z-image",
        "reserved_credits": 4,
        "final_credits": 4 if succeeded else 0,
        "created_at": iso(updated_at - timedelta(minutes=1)),
        "updated_at": iso(updated_at),
        "result": {"primary_url": url, "urls": [url]} if succeeded else None,
        "error": None
        if succeeded
        else {"code": "generation_failed", "message": f"private {secrets.token_hex(6)}"},
        "usage": {"seconds": 3},
    }
    return {
        "id": event_id or f"evt_{secrets.token_hex(8)}",
        "type": event_type,
        "api_version": "2026-05-11",
        "created_at": iso(updated_at),
        "data": generation if data is None else data,
    }


def sign(
    secret: str, body: bytes, msg_id: str, timestamp: datetime | None = None
) -> dict[str, str]:
    """Headers made by the standardwebhooks package, timestamped now unless told otherwise."""
    moment = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def signed(secret: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(event)
    return body, sign(secret, body, event["id"])


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    """`receiver ARGS...` as an operator types it, in its own process; `answer` is typed
    in (to a confirmation; none by default, never the test runner's own input). Forked from
    a process that has imported the CLI already (tests/cli_processes.py)."""
    return run_forked(args, {"PATH": os.environ.get("PATH", ""), **env}, cwd, answer, timeout=60)


# First starts of a server whose free port another process took meanwhile.
PORT_TRIES = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Services started and not stopped yet. A test that fails before its `stop` leaves its service
# here, not to the garbage collector: collected while running, its process object warns
# (an error under this suite's filters) inside whichever test happens to run then. The run's
# end stops them (conftest.py).
LEFT_RUNNING: set["ReceiverProcess"] = set()


class ReceiverProcess:
    """`receiver serve` (or `receiver worker`) as an operator runs it: its own process and
    log file, on a free loopback port."""

    def __init__(self, workdir: Path, env: dict[str, str], args: tuple[str, ...] = ("serve",)):
        self.workdir = workdir
        self.env = env
        self.args = args
        self._process: subprocess.Popen[bytes] | None = None
        self._starts_before = 0
        self._listening_before = 0
        self._take_port()

    def _take_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"receiver-{self.port}.log"

    @property
    def _listening(self) -> str:
        """What this process logs once it listens: readiness is read from its own log as well
        as from /readyz, which another test's server may answer, having been handed the
        same free port while this one was still starting."""
        return f"Uvicorn running on {self.url} "

    @property
    def serves_http(self) -> bool:
        return self.args[0] == "serve"

    def start(self) -> "ReceiverProcess":
        first = self._process is None
        for _ in range(PORT_TRIES - 1 if first and self.serves_http else 0):
            try:
                return self._start()
            except RuntimeError:
                # Another process took the free port before this one bound it: a first start
                # takes another (a restart keeps the URL its test holds).
                if "address already in use" not in self.output():
                    raise
                LEFT_RUNNING.discard(self)
                self._take_port()
        return self._start()

    def _start(self) -> "ReceiverProcess":
        env = {"PATH": os.environ.get("PATH", ""), **self.env}
        self._starts_before = self.output().count("forwarder_started")
        self._listening_before = self.output().count(self._listening)
        port = ("--port", str(self.port)) if self.serves_http else ()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "receiver", *self.args, *port],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        LEFT_RUNNING.add(self)
        wait_until(self._ready, timeout=20, what=lambda: f"receiver ready:\n{self.output()}")
        return self

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"receiver exited at start:\n{self.output()}")
        if not self.serves_http:
            return self.output().count("forwarder_started") > self._starts_before
        if self.output().count(self._listening) <= self._listening_before:
            return False
        try:
            return HTTP.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self._process is not None
        self._process.send_signal(sig)
        code = self._process.wait(timeout=30)
        self._process = None
        LEFT_RUNNING.discard(self)
        return code

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_until(
    condition: Callable[[], bool], timeout: float, what: Callable[[], str] | str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what if isinstance(what, str) else what()}"
    )


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


Respond = Callable[[Received, int], tuple[int, dict[str, str]]]
RESET = 0  # a status `respond` can give: the connection is reset, with no answer


def always(status: int) -> Respond:
    return lambda _, __: (status, {})


ANSWER_200 = always(200)
# RECEIVER_FORWARD_RETRY_SCHEDULE with no retries: each delivery has one attempt, so a sink
# answering 500 makes a dead letter at once. (A 410 would too, but it also disables the
# destination, which stops the dead letters after the first.)
ONE_ATTEMPT = ","


class Downstream:
    """A real HTTP server on loopback: records every request it receives and answers as
    `respond` says, given the request and how many earlier ones carried its webhook-id
    (`respond` may take its time, or answer RESET)."""

    def __init__(self, respond: Respond = ANSWER_200, delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay
        self.received: list[Received] = []
        self._lock = threading.Lock()
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Received(
                    {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
                with downstream._lock:
                    earlier = sum(
                        1
                        for r in downstream.received
                        if r.headers.get("webhook-id") == request.headers.get("webhook-id")
                    )
                    downstream.received.append(request)
                time.sleep(downstream.delay)
                status, headers = downstream.respond(request, earlier)
                if status == RESET:
                    # Linger 0: closing sends a TCP reset instead of an orderly close.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in {**headers, "content-length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = _Sink(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.headers.get("webhook-id", "") for r in self.received]

    def of(self, event_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.headers.get("webhook-id") == event_id]


class _Sink(ThreadingHTTPServer):
    # socketserver's default backlog is 5: with a forwarder's 16 or 32 connections opening at
    # once, the kernel dropped SYNs, and a connection made 1 s later (the SYN retry) outlived
    # a short attempt timeout: an attempt on record that the sink never saw.
    request_queue_size = 128


class Load:
    """Rivya delivering without pause from several threads, each event once, until stopped.
    It remembers which events were acknowledged, which statuses refused the rest, and how
    many requests ended without an answer (a server killed or stopping)."""

    def __init__(
        self, url: str, secret: str, register: Callable[..., None], threads: int = 8
    ) -> None:
        self.url = f"{url}/webhooks/rivya"
        self.secret = secret
        self.register = register
        self.acknowledged: list[str] = []
        self.refused: Counter[int] = Counter()
        self.unanswered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._deliver) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _deliver(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                event = make_event()
                try:
                    body, headers = signed(self.secret, event)
                    # Every event's: a leak of one in a thousand is still a leak.
                    self.register(
                        headers["webhook-signature"],
                        body.decode(),
                        *event["data"]["result"]["urls"],
                    )
                    response = client.post(self.url, content=body, headers=headers)
                except httpx.TransportError:
                    with self._lock:
                        self.unanswered += 1
                    time.sleep(0.01)
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.acknowledged.append(event["id"])
                    else:
                        self.refused[response.status_code] += 1


class Operator:
    """Runs `receiver ...` with the server's own settings, from another process."""

    def __init__(self, server: ReceiverProcess) -> None:
        self.server = server

    def run(self, *args: str, code: int = 0, answer: str = "") -> str:
        result = run_cli(*args, env=self.server.env, cwd=self.server.workdir, answer=answer)
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout if code == 0 else result.stderr

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json"))
