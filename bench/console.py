"""The console, the admin API's listings and a /metrics scrape on a database of a million
events: how long each takes to answer, with the filters that find a few rows among many.

A SQLite database is migrated by `receiver migrate`, then filled directly (a million events
over 30 days, a record, a delivery and an attempt for each; see `fill`), and
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
# One event in RARE is of RARE_TYPE, and another quarantined: the filters that find a few
# rows among a million.
RARE = 10_000
RARE_TYPE = "generation.processing"
PENDING = 1_000
SECOND = "archive"
ASKS = 7
TOKEN = secrets.token_urlsafe(24)
CSRF_MARK = 'name="csrf" value="'


@dataclass(frozen=True, slots=True)
class ConsolePages:
    events: int
    fill_seconds: float
    median_ms: dict[str, float]


def fill(path: Path, events: int) -> None:
    """One event in ten failed (its delivery dead); one in a hundred stale; one in RARE of a
    rare type, another quarantined; one in fifty also sent to a second destination; the
    newest thousand still pending."""
    now = datetime.now(UTC).replace(tzinfo=None)
    span = timedelta(days=30).total_seconds()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")

    def rows(n: int) -> tuple[str, str, str, str, bool]:
        moment = (now - timedelta(seconds=span * (events - n) / events)).isoformat(" ")
        failed = n % 10 == 0
        return f"evt_{n:08d}", f"task_{n:08d}", moment, f"model-{n % 7}", failed

    def event_type(n: int, failed: bool) -> str:
        if n % RARE == 5:
            return RARE_TYPE
        return "generation.failed" if failed else "generation.succeeded"

    def outcome(n: int) -> str:
        if n % RARE == 3:
            return "quarantined"
        return "stale" if n % 100 == 1 else "applied"

    def state(n: int, failed: bool) -> str:
        if n >= events - PENDING:
            return "pending"
        return "dead" if failed else "delivered"

    with connection:
        for start in range(0, events, 50_000):
            batch = [rows(n) for n in range(start, min(start + 50_000, events))]
            connection.executemany(
                "INSERT INTO events (id, webhook_id, type, received_at, task_id, outcome, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e, e, event_type(int(e[4:]), f), at, t, outcome(int(e[4:])), b"{}")
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
                " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                [
                    (
                        int(e[4:]) + 1,
                        e,
                        "default",
                        state(int(e[4:]), f),
                        at,
                        at,
                        at,
                        500 if f else 200,
                    )
                    for e, _, at, _, f in batch
                ]
                + [
                    (events + int(e[4:]) + 1, e, SECOND, "delivered", at, at, at, 200)
                    for e, _, at, _, _ in batch
                    if int(e[4:]) % 50 == 0
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
    destinations = folder / "destinations.toml"
    destinations.write_text(
        "".join(
            f'[[destinations]]\nname = "{name}"\nurl = "http://127.0.0.1:9/"\n'
            'signing_secrets_env = "BENCH_FORWARD_SECRET"\n'
            for name in ("default", SECOND)
        )
    )
    env = {
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "RECEIVER_SIGNING_SECRETS": secret.reveal(),
        "RECEIVER_ADMIN_TOKEN": TOKEN,
        # Pending deliveries to `default` and `archive` are theirs, not orphaned.
        "RECEIVER_DESTINATIONS_FILE": str(destinations),
        "BENCH_FORWARD_SECRET": secret.reveal(),
    }
    receiver = [sys.executable, "-m", "receiver"]
    subprocess.run([*receiver, "migrate"], env=env, check=True, capture_output=True)
    started = time.monotonic()
    fill(database, events)
    fill_seconds = time.monotonic() - started
    port = free_port()
    # No forwarder: the pages are measured on the database as filled, not as it drains.
    serve = [*receiver, "serve", "--port", str(port), "--no-forwarder"]
    server = Process(serve, env, folder / "serve.log", port)
    base = f"http://127.0.0.1:{port}"
    day = f"{datetime.now(UTC) - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
    old = [f"{datetime.now(UTC) - timedelta(days=d):%Y-%m-%dT%H:%M:%SZ}" for d in (20, 19)]
    month = f"{datetime.now(UTC) - timedelta(days=31):%Y-%m-%dT%H:%M:%SZ}"
    pages = {
        "overview": "/console/",
        "failed jobs": "/console/failed",
        "failed jobs, by error code": "/console/failed?error_code=generation_failed",
        "records, a status": "/console/records?status=succeeded",
        "a record and its history": f"/console/records/task_{events // 2:08d}",
        "events": "/console/events",
        "events, a type and a day": f"/console/events?type=generation.failed&since={day}",
        "events, a rare type": f"/console/events?type={RARE_TYPE}",
        "events, a type none has": "/console/events?type=generation.unknown",
        "events, quarantined": "/console/events?outcome=quarantined",
        "events, an outcome none has": "/console/events?outcome=ignored",
        "events, the common type, an outcome none has": "/console/events"
        "?type=generation.succeeded&outcome=ignored",
        "events, a day 20 days ago": f"/console/events?since={old[0]}&until={old[1]}",
        "an event": f"/console/events/evt_{events // 2:08d}",
        "dead letters": "/console/deliveries?state=dead",
        f"dead letters, to {SECOND} (none)": f"/console/deliveries?state=dead&destination={SECOND}",
        "pending": "/console/deliveries?state=pending",
        f"delivered, to {SECOND}": f"/console/deliveries?state=delivered&destination={SECOND}",
        "delivered (most rows)": "/console/deliveries?state=delivered",
        "delivered, to default (most rows)": "/console/deliveries?state=delivered"
        "&destination=default",
        "replay, everything": "/console/replay",
        "replay, dead": "/console/replay?delivery_state=dead",
        "replay, dead to default": "/console/replay?delivery_state=dead&destination=default",
        "replay, dead in a day": f"/console/replay?delivery_state=dead&since={day}",
        "replay, dead on a day 20 days ago": "/console/replay?delivery_state=dead"
        f"&since={old[0]}&until={old[1]}",
        f"replay, dead to {SECOND} (none)": "/console/replay?delivery_state=dead"
        f"&destination={SECOND}",
        "replay, delivered": "/console/replay?delivery_state=delivered",
        "replay, pending in a month": f"/console/replay?delivery_state=pending&since={month}",
        "replay, a rare type": f"/console/replay?type={RARE_TYPE}",
        "a destination, its dead letters first": "/console/destinations/default",
        "a destination, delivered (most rows)": "/console/destinations/default?state=delivered",
        f"a destination, {SECOND} (delivered)": f"/console/destinations/{SECOND}",
        "a destination's dead letters, the replay's confirmation": "/console/destinations"
        "/default/replay",
        "reprocess quarantined, the confirmation": "/console/reprocess",
    }
    # The admin API's listings, with the admin token.
    listings = {
        "admin events, a rare type": f"/admin/events?type={RARE_TYPE}",
        "admin events, quarantined in a day": f"/admin/events?outcome=quarantined&since={day}",
        "admin deliveries, dead": "/admin/deliveries?state=dead",
        "admin deliveries, orphaned": "/admin/deliveries?state=orphaned",
        f"admin deliveries, to {SECOND}": f"/admin/deliveries?destination={SECOND}",
        "admin deliveries, to default (most rows)": "/admin/deliveries?destination=default",
        "admin records, failed": "/admin/records?status=failed",
        "admin records, stale": "/admin/records?stale_after=15m",
        "admin destinations": "/admin/destinations",
        # Gauges computed when due, off the scrape: the same at a million rows as at none.
        "metrics scrape": "/metrics",
    }
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            form = client.get("/console/login").text
            csrf = form.split(CSRF_MARK, 1)[1].split('"', 1)[0]
            client.post("/console/login", data={"csrf": csrf, "token": TOKEN})
            admin = {"authorization": f"Bearer {TOKEN}"}
            median_ms = {name: _median_ms(client, path) for name, path in pages.items()}
            median_ms |= {name: _median_ms(client, path, admin) for name, path in listings.items()}
    finally:
        server.stop()
    return ConsolePages(events, fill_seconds, median_ms)


def _median_ms(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> float:
    took = []
    for _ in range(ASKS):
        begin = time.perf_counter()
        response = client.get(path, headers=headers)
        took.append((time.perf_counter() - begin) * 1000)
        response.raise_for_status()
    return statistics.median(took)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pages = run_console(Path(tmp), WebhookSecret.generate())
    print(f"{pages.events:,} events, filled in {pages.fill_seconds:.0f} s")
    for name, ms in pages.median_ms.items():
        print(f"{name}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
