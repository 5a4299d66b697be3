"""The console on a database of a million events: how long each page takes to render.

A SQLite database is migrated by `receiver migrate`, then filled directly (a million events
over 30 days, a record, a delivery and an attempt for each, one in ten failed), and
`receiver serve` runs on it. A signed-in client asks each page several times; the median
is kept. `python -m bench.console` runs it alone.
"""

import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.servers import Process, free_port
from receiver.signatures import WebhookSecret

EVENTS = 1_000_000
ASKS = 7
TOKEN = secrets.token_urlsafe(24)
CSRF_MARK = 'name="csrf" value="'


@dataclass(frozen=True, slots=True)
class ConsolePages:
    events: int
    fill_seconds: float
    median_ms: dict[str, float]


def fill(path: Path, events: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    span = timedelta(days=30).total_seconds()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")

    def rows(n: int) -> tuple[str, str, str, str, bool]:
        moment = (now - timedelta(seconds=span * (events - n) / events)).isoformat(" ")
        failed = n % 10 == 0
        return f"evt_{n:08d}", f"task_{n:08d}", moment, f"model-{n % 7}", failed

    with connection:
        for start in range(0, events, 50_000):
            batch = [rows(n) for n in range(start, min(start + 50_000, events))]
            connection.executemany(
                "INSERT INTO events (id, webhook_id, type, received_at, task_id, outcome, body)"
                " VALUES (?, ?, ?, ?, ?, 'applied', ?)",
                [
                    (e, e, "generation.failed" if f else "generation.succeeded", at, t, b"{}")
                    for e, t, at, _, f in batch
                ],
            )
            connection.executemany(
                "INSERT INTO records (task_id, status, model, reserved_credits, final_credits,"
                " result_urls, error_code, error_message, updated_at, last_event_id, changed_at)"
                " VALUES (?, ?, ?, 4, ?, '[]', ?, ?, ?, ?, ?)",
                [
                    (
                        t,
                        "failed" if f else "succeeded",
                        m,
                        0 if f else 4,
                        "generation_failed" if f else None,
                        "it failed" if f else None,
                        at,
                        e,
                        at,
                    )
                    for e, t, at, m, f in batch
                ],
            )
            connection.executemany(
                "INSERT INTO deliveries (id, event_id, destination, state, attempts,"
                " next_attempt_at, created_at, finished_at, last_status_code)"
                " VALUES (?, ?, 'default', ?, 1, ?, ?, ?, ?)",
                [
                    (int(e[4:]) + 1, e, "dead" if f else "delivered", at, at, at, 500 if f else 200)
                    for e, _, at, _, f in batch
                ],
            )
            connection.executemany(
                "INSERT INTO attempts (delivery_id, attempted_at, duration_ms, status_code)"
                " VALUES (?, ?, 3.0, ?)",
                [(int(e[4:]) + 1, at, 500 if f else 200) for e, _, at, _, f in batch],
            )
    connection.close()


def run_console(folder: Path, secret: WebhookSecret, events: int = EVENTS) -> ConsolePages:
    database = folder / "console.db"
    env = {
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "RECEIVER_SIGNING_SECRETS": secret.reveal(),
        "RECEIVER_ADMIN_TOKEN": TOKEN,
    }
    receiver = [sys.executable, "-m", "receiver"]
    subprocess.run([*receiver, "migrate"], env=env, check=True, capture_output=True)
    started = time.monotonic()
    fill(database, events)
    fill_seconds = time.monotonic() - started
    port = free_port()
    server = Process([*receiver, "serve", "--port", str(port)], env, folder / "serve.log", port)
    base = f"http://127.0.0.1:{port}"
    pages = {
        "overview": "/console/",
        "failed jobs": "/console/failed",
        "failed jobs, by error code": "/console/failed?error_code=generation_failed",
        "records, a status": "/console/records?status=succeeded",
        "a record and its history": f"/console/records/task_{events // 2:08d}",
        "events": "/console/events",
        "events, a type and a day": "/console/events?type=generation.failed"
        f"&since={datetime.now(UTC) - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}",
        "an event": f"/console/events/evt_{events // 2:08d}",
        "dead letters": "/console/deliveries?state=dead",
    }
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            form = client.get("/console/login").text
            csrf = form.split(CSRF_MARK, 1)[1].split('"', 1)[0]
            client.post("/console/login", data={"csrf": csrf, "token": TOKEN})
            median_ms = {}
            for name, path in pages.items():
                took = []
                for _ in range(ASKS):
                    begin = time.perf_counter()
                    response = client.get(path)
                    took.append((time.perf_counter() - begin) * 1000)
                    response.raise_for_status()
                median_ms[name] = statistics.median(took)
    finally:
        server.stop()
    return ConsolePages(events, fill_seconds, median_ms)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pages = run_console(Path(tmp), WebhookSecret.generate())
    print(f"{pages.events:,} events, filled in {pages.fill_seconds:.0f} s")
    for name, ms in pages.median_ms.items():
        print(f"{name}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
