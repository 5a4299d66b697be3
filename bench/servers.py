"""The processes a benchmark run starts: the bare endpoint, `receiver serve` and
`receiver worker`, each its own process with one uvicorn worker, on loopback."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.load import HERE, write_feed, wrk
from receiver.signatures import WebhookSecret
from tests.databases import reading


class Process:
    """A server or worker of its own; `ready` is a log line to wait for, or a port."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready: str | int) -> None:
        self.log = log
        # Each run sets its own tracing: an OTEL_* variable of the caller's shell would turn
        # it on in the runs measured without it.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                args, env={**inherited, **env}, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not self._ready(ready):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def _ready(self, ready: str | int) -> bool:
        if isinstance(ready, str):
            return ready in self.log.read_text(errors="replace")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", ready)) == 0

    def memory(self, field: str) -> float:
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match[1]) / 1024

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_bare(workdir: Path, name: str) -> tuple[Process, str]:
    """bench/bare.py; its base URL (POST /bare answers 204, POST /downstream 200)."""
    port = free_port()
    process = Process(
        [sys.executable, str(HERE / "bare.py"), str(port)], {}, workdir / f"{name}.log", port
    )
    return process, f"http://127.0.0.1:{port}"


def receiver_env(workdir: Path, secret: WebhookSecret, **extra: str) -> dict[str, str]:
    return {
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'receiver.db'}",
        "RECEIVER_SIGNING_SECRETS": secret.reveal(),
        "RECEIVER_LOG_LEVEL": "info",
        **{f"RECEIVER_{k.upper()}": v for k, v in extra.items()},
    }


def serve(workdir: Path, env: dict[str, str], *args: str) -> tuple[Process, str]:
    port = free_port()
    process = Process(
        [sys.executable, "-m", "receiver", "serve", "--port", str(port), *args],
        env,
        workdir / f"serve-{port}.log",
        ready=port,
    )
    return process, f"http://127.0.0.1:{port}/webhooks/rivya"


def start_worker(workdir: Path, env: dict[str, str]) -> Process:
    return Process(
        [sys.executable, "-m", "receiver", "worker"],
        env,
        workdir / "worker.log",
        ready="forwarder_started",
    )


def warm_up(url: str, workdir: Path, secret: WebhookSecret) -> None:
    feed = workdir / "warmup.tsv"
    write_feed(feed, secret, 5_000)
    wrk(url, feed, 2)


def stored_events(database_url: str) -> int:
    with reading(database_url) as db:
        return int(db.scalar(sa.text("SELECT count(*) FROM events")))


def spans_dropped(url: str) -> dict[str, int]:
    """receiver_trace_spans_dropped_total by reason, from the /metrics of the server whose
    webhook endpoint is `url` (open, RECEIVER_METRICS_PUBLIC); empty with tracing off."""
    metrics = httpx.get(url.replace("/webhooks/rivya", "/metrics")).raise_for_status().text
    found = re.findall(
        r'^receiver_trace_spans_dropped_total\{reason="(\w+)"\} (\S+)$', metrics, re.M
    )
    return {reason: int(float(count)) for reason, count in found}
