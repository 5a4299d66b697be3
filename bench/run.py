"""`make bench`: how close ingest comes to a bare Starlette endpoint, and what else it costs.

Runs on loopback, one server at a time, each its own process with one uvicorn worker:
  1. a bare Starlette endpoint that reads the body and answers 204 (the ceiling);
  2. `receiver serve` on a fresh SQLite database, default durability, forwarding off;
  3. the same with every event sent three times;
  4. `receiver worker` draining a backlog of 20,000 deliveries into a local 200 endpoint;
  5. `receiver serve` under 60 s of load, for memory growth;
  6. `receiver serve` on PostgreSQL (a server the bench starts), one replica, then two
     (each replica driven by its own wrk with half the connections).
wrk drives the load at 32 connections with pre-signed, unique requests. The table is
printed and written into README.md's Performance section.
"""

import asyncio
import json
import os
import platform
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import sqlalchemy as sa

from receiver.ingest.envelope import parse_event
from receiver.operators.sample import build_sample_event
from receiver.signatures import WebhookSecret, sign_headers
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.events import Submission
from receiver.store.writer import EventWriter
from tests.databases import PostgresServer, reading

HERE = Path(__file__).parent
CONNECTIONS = 32
DURATION = 10
MEMORY_DURATION = 60
DRAIN_EVENTS = 20_000
README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int
    wrapped: bool


class Process:
    """A server or worker of its own; `ready` is a log line to wait for, or a port."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready: str | int) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
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


def write_feed(path: Path, secret: WebhookSecret, unique: int, copies: int = 1) -> None:
    """Signed requests, one a line; with copies > 1, each block of 100 events is repeated,
    so a duplicate arrives soon after its original, as a retry would."""
    now = int(time.time())
    with path.open("w") as feed:
        for start in range(0, unique, 100):
            block = []
            for _ in range(min(100, unique - start)):
                event = build_sample_event("generation.succeeded")
                body = orjson.dumps(event)
                headers = sign_headers([secret], event["id"], body, now)
                block.append(
                    f"{event['id']}\t{now}\t{headers['webhook-signature']}\t{body.decode()}\n"
                )
            feed.writelines(block * copies)


def wrk(url: str, feed: Path, duration: int, connections: int = CONNECTIONS) -> Load:
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(HERE / "feed.lua"),
            url,
            "--",
            str(feed),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return Load(
        rps=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        non_2xx=report["non_2xx"],
        socket_errors=report["socket_errors"],
        requests=report["requests"],
        wrapped=bool(report["wrapped"]),
    )


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


def stored_events(database_url: str) -> int:
    with reading(database_url) as db:
        return int(db.scalar(sa.text("SELECT count(*) FROM events")))


def combined(loads: list[Load]) -> Load:
    """Parallel wrk runs as one: rates and counts add up, the slower percentiles stand."""
    return Load(
        rps=sum(load.rps for load in loads),
        p50_ms=max(load.p50_ms for load in loads),
        p99_ms=max(load.p99_ms for load in loads),
        non_2xx=sum(load.non_2xx for load in loads),
        socket_errors=sum(load.socket_errors for load in loads),
        requests=sum(load.requests for load in loads),
        wrapped=any(load.wrapped for load in loads),
    )


def run_postgres(
    workdir: Path, secret: WebhookSecret, feeds: list[Path], postgres: PostgresServer
) -> tuple[Load, int]:
    """One replica per feed, on one fresh PostgreSQL database, each driven by its own wrk."""
    env = {**receiver_env(workdir, secret), "RECEIVER_DATABASE_URL": postgres.new_database()}
    replicas = [serve(workdir, env, "--no-forwarder") for _ in feeds]
    try:
        for _, url in replicas:
            warm_up(url, workdir, secret)
        before = stored_events(env["RECEIVER_DATABASE_URL"])
        loads: dict[int, Load] = {}

        def drive(index: int) -> None:
            url, feed = replicas[index][1], feeds[index]
            loads[index] = wrk(url, feed, DURATION, CONNECTIONS // len(feeds))

        drivers = [threading.Thread(target=drive, args=(i,)) for i in range(len(feeds))]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
        stored = stored_events(env["RECEIVER_DATABASE_URL"]) - before
        return combined([loads[index] for index in range(len(feeds))]), stored
    finally:
        for process, _ in replicas:
            process.stop()


def warm_up(url: str, workdir: Path, secret: WebhookSecret) -> None:
    feed = workdir / "warmup.tsv"
    write_feed(feed, secret, 5_000)
    wrk(url, feed, 2)


def run_bare(workdir: Path, secret: WebhookSecret, feed: Path) -> tuple[Load, float]:
    port = free_port()
    bare = Process(
        [sys.executable, str(HERE / "bare.py"), str(port)],
        {},
        workdir / "bare.log",
        ready=port,
    )
    try:
        warm_up(f"http://127.0.0.1:{port}/bare", workdir, secret)
        return wrk(f"http://127.0.0.1:{port}/bare", feed, DURATION), bare.memory("VmHWM")
    finally:
        bare.stop()


def run_receiver(workdir: Path, secret: WebhookSecret, feed: Path) -> tuple[Load, float, int]:
    env = receiver_env(workdir, secret)
    process, url = serve(workdir, env)
    try:
        warm_up(url, workdir, secret)
        before = stored_events(env["RECEIVER_DATABASE_URL"])
        load = wrk(url, feed, DURATION)
        return load, process.memory("VmHWM"), stored_events(env["RECEIVER_DATABASE_URL"]) - before
    finally:
        process.stop()


async def store_backlog(database_url: str, secret: WebhookSecret, count: int) -> None:
    engine = create_engine(database_url, 5)
    await upgrade_schema(engine)
    async with EventWriter(engine, forward=True) as writer:
        for start in range(0, count, 500):
            submissions = []
            for _ in range(min(500, count - start)):
                body = orjson.dumps(build_sample_event("generation.succeeded"))
                event = parse_event(body, "msg")
                submissions.append(Submission(event, event.event_id, body, datetime.now(UTC)))
            await asyncio.gather(*(writer.submit(s) for s in submissions))
    await engine.dispose()


def run_drain(workdir: Path, secret: WebhookSecret) -> float:
    port = free_port()
    downstream = Process(
        [sys.executable, str(HERE / "bare.py"), str(port)],
        {},
        workdir / "downstream.log",
        ready=port,
    )
    env = receiver_env(
        workdir,
        secret,
        forward_url=f"http://127.0.0.1:{port}/downstream",
        forward_signing_secrets=WebhookSecret.generate().reveal(),
    )
    asyncio.run(store_backlog(env["RECEIVER_DATABASE_URL"], secret, DRAIN_EVENTS))
    worker = Process(
        [sys.executable, "-m", "receiver", "worker"],
        env,
        workdir / "worker.log",
        ready="forwarder_started",
    )
    try:
        with sqlite3.connect(workdir / "receiver.db") as db:
            while db.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()[
                0
            ]:
                time.sleep(0.1)
            first, last = db.execute(
                "SELECT min(attempted_at), max(attempted_at) FROM attempts"
            ).fetchone()
            delivered = db.execute(
                "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
            ).fetchone()[0]
    finally:
        worker.stop()
        downstream.stop()
    assert delivered == DRAIN_EVENTS, f"{delivered} of {DRAIN_EVENTS} delivered"
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return DRAIN_EVENTS / span


def run_memory(workdir: Path, secret: WebhookSecret, rps: float) -> tuple[float, float, Load]:
    feed = workdir / "memory.tsv"
    write_feed(feed, secret, int(rps * MEMORY_DURATION * 1.3))
    process, url = serve(workdir, receiver_env(workdir, secret))
    samples: dict[str, float] = {}

    def sample() -> None:
        time.sleep(5)
        samples["start"] = process.memory("VmRSS")
        time.sleep(MEMORY_DURATION - 7)
        samples["end"] = process.memory("VmRSS")

    sampler = threading.Thread(target=sample)
    try:
        sampler.start()
        load = wrk(url, feed, MEMORY_DURATION)
        sampler.join()
    finally:
        process.stop()
    return samples["start"], samples["end"], load


def main() -> int:
    secret = WebhookSecret.generate()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = ("bare", "ingest", "duplicates", "drain", "memory", "postgres")
        dirs = {name: root / name for name in names}
        for path in dirs.values():
            path.mkdir()
        print("Writing signed requests ...", flush=True)
        feed = root / "unique.tsv"
        write_feed(feed, secret, 200_000)
        duplicates = root / "duplicates.tsv"
        write_feed(duplicates, secret, 70_000, copies=3)

        print("1/7 bare Starlette", flush=True)
        bare, bare_rss = run_bare(dirs["bare"], secret, feed)
        print("2/7 receiver", flush=True)
        ingest, ingest_rss, ingest_rows = run_receiver(dirs["ingest"], secret, feed)
        print("3/7 receiver, every event three times", flush=True)
        dup, dup_rss, dup_rows = run_receiver(dirs["duplicates"], secret, duplicates)
        print("4/7 forwarder drain", flush=True)
        drain_rate = run_drain(dirs["drain"], secret)
        print("5/7 memory over 60 s", flush=True)
        rss_start, rss_end, memory_load = run_memory(dirs["memory"], secret, ingest.rps)
        halves = [root / "half-a.tsv", root / "half-b.tsv"]
        for half in halves:
            write_feed(half, secret, 100_000)
        postgres = PostgresServer()
        try:
            print("6/7 receiver on PostgreSQL, one replica", flush=True)
            pg_one, pg_one_rows = run_postgres(dirs["postgres"], secret, [feed], postgres)
            print("7/7 receiver on PostgreSQL, two replicas", flush=True)
            pg_two, pg_two_rows = run_postgres(dirs["postgres"], secret, halves, postgres)
        finally:
            postgres.stop()

    ratio = ingest.rps / bare.rps
    growth = (rss_end - rss_start) / rss_start * 100
    checks = {
        "ingest >= 0.4 x bare": ratio >= 0.4,
        "p99 <= 25 ms at 32 connections": ingest.p99_ms <= 25,
        "0 non-2xx": all(load.non_2xx == 0 for load in (ingest, dup, memory_load, pg_one, pg_two)),
        "every acknowledged event stored": all(
            rows >= load.requests - load.non_2xx and not load.wrapped
            for load, rows in ((ingest, ingest_rows), (pg_one, pg_one_rows), (pg_two, pg_two_rows))
        ),
        "forwarder >= 2,000 deliveries/s": drain_rate >= 2000,
        "RSS growth < 10 % over 60 s": growth < 10,
    }
    rows = [
        ("bare Starlette (204)", bare, "-", bare_rss),
        ("receiver", ingest, f"{ingest_rows:,}", ingest_rss),
        ("receiver, each event x3", dup, f"{dup_rows:,}", dup_rss),
        ("receiver, PostgreSQL, 1 replica", pg_one, f"{pg_one_rows:,}", None),
        ("receiver, PostgreSQL, 2 replicas", pg_two, f"{pg_two_rows:,}", None),
    ]
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"PostgreSQL {postgres.version} on the same machine; "
        f"wrk with 1 thread and {CONNECTIONS} connections, {DURATION} s a run; one uvicorn "
        "worker (uvloop, httptools); SQLite in WAL with synchronous=FULL.",
        "",
        "| run | requests/s | p50 ms | p99 ms | non-2xx | rows stored | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} "
            f"| {load.non_2xx} | {stored} | {'-' if rss is None else f'{rss:.0f}'} |"
            for name, load, stored, rss in rows
        ),
        "",
        f"- receiver / bare: **{ratio:.2f}**",
        f"- PostgreSQL, two replicas / one: **{pg_two.rps / pg_one.rps:.2f}**",
        f"- forwarder draining {DRAIN_EVENTS:,} deliveries into a local 200 endpoint: "
        f"**{drain_rate:,.0f} deliveries/s**",
        f"- RSS under {MEMORY_DURATION} s of load ({memory_load.rps:,.0f} requests/s): "
        f"{rss_start:.0f} MiB at 5 s, {rss_end:.0f} MiB at the end (**{growth:+.1f} %**)",
        "",
        *(f"- {'met' if ok else 'MISSED'}: {name}" for name, ok in checks.items()),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    readme = README.read_text()
    if START in readme and END in readme:
        head, rest = readme.split(START, 1)
        README.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")
    # Speed is reported; correctness fails the run.
    return 0 if checks["0 non-2xx"] and checks["every acknowledged event stored"] else 1


if __name__ == "__main__":
    sys.exit(main())
