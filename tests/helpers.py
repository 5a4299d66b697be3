"""What the tests share: Rivya-shaped events, signed by the independent `standardwebhooks`
package, and a real `receiver serve` process on a free loopback port."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

from receiver.signatures import WebhookSecret


def new_secret() -> str:
    return WebhookSecret.generate().reveal()


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReceiverProcess:
    """`receiver serve` as an operator runs it, in its own process, with its own log file."""

    def __init__(self, workdir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.env = env
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"receiver-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> "ReceiverProcess":
        env = {"PATH": os.environ.get("PATH", ""), **self.env}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "receiver", "serve", "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"receiver exited at start:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"receiver not ready after {timeout} s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self._process is not None
        self._process.send_signal(sig)
        code = self._process.wait(timeout=20)
        self._process = None
        return code

    @property
    def running(self) -> bool:
        return self._process is not None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
