"""Each measurement of `make bench`, one function a run, on the servers it starts."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.load import CONNECTIONS, DURATION, Load, aiohttp_ceiling, combined, write_feed, wrk
from bench.servers import (
    receiver_env,
    serve,
    spans_dropped,
    start_bare,
    start_worker,
    stored_events,
    warm_up,
)
from receiver.ingest.envelope import parse_event
from receiver.operators.sample import build_sample_event
from receiver.settings import Settings
from receiver.signatures import WebhookSecret
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.events import Submission
from receiver.store.writer import EventWriter
from tests.databases import PostgresServer

DRAIN_EVENTS = 20_000
MEMORY_DURATION = 60


def run_bare(workdir: Path, secret: WebhookSecret, feed: Path) -> tuple[Load, float]:
    bare, base = start_bare(workdir, "bare")
    try:
        warm_up(f"{base}/bare", workdir, secret)
        return wrk(f"{base}/bare", feed, DURATION), bare.memory("VmHWM")
    finally:
        bare.stop()


@dataclass
class Ingest:
    load: Load
    rss: float
    rows: int
    # Spans the tracing pipeline dropped, by reason (none are counted with tracing off).
    dropped_spans: dict[str, int]


def run_receiver(
    workdir: Path, secret: WebhookSecret, feed: Path, otel: Mapping[str, str] | None = None
) -> Ingest:
    """`receiver serve` under wrk; `otel`, OTEL_* variables that turn tracing on."""
    # /metrics open, for the dropped-span count: it changes no other route.
    env = {**receiver_env(workdir, secret, metrics_public="true"), **(otel or {})}
    process, url = serve(workdir, env)
    try:
        warm_up(url, workdir, secret)
        before = stored_events(env["RECEIVER_DATABASE_URL"])
        load = wrk(url, feed, DURATION)
        rows = stored_events(env["RECEIVER_DATABASE_URL"]) - before
        return Ingest(load, process.memory("VmHWM"), rows, spans_dropped(url))
    finally:
        process.stop()


async def store_backlog(env: dict[str, str], count: int) -> None:
    """`count` events stored, with their deliveries, as the receiver `env` configures."""
    settings = Settings.from_environment(env, None)
    engine = create_engine(settings.database_url, 5)
    await upgrade_schema(engine)
    async with EventWriter(engine, settings.forwarding) as writer:
        for start in range(0, count, 500):
            submissions = []
            for _ in range(min(500, count - start)):
                body = orjson.dumps(build_sample_event("generation.succeeded"))
                event = parse_event(body, "msg")
                submissions.append(Submission(event, event.event_id, body, datetime.now(UTC)))
            await asyncio.gather(*(writer.submit(s) for s in submissions))
    await engine.dispose()


@dataclass
class Drain:
    rate: float
    ceiling: float
    rss_start: float
    rss_end: float


def run_drain(workdir: Path, secret: WebhookSecret) -> Drain:
    """`receiver worker` sends a backlog of DRAIN_EVENTS into a sink that answers 200 at
    once; then a bare aiohttp client posts as many requests to the same sink."""
    sink, base = start_bare(workdir, "downstream")
    env = receiver_env(
        workdir,
        secret,
        forward_url=f"{base}/downstream",
        forward_signing_secrets=WebhookSecret.generate().reveal(),
    )
    try:
        asyncio.run(store_backlog(env, DRAIN_EVENTS))
        worker = start_worker(workdir, env)
        rss: list[float] = []
        try:
            with sqlite3.connect(workdir / "receiver.db") as db:
                pending = "SELECT count(*) FROM deliveries WHERE state = 'pending'"
                while db.execute(pending).fetchone()[0]:
                    rss.append(worker.memory("VmRSS"))
                    time.sleep(0.1)
                first, last = db.execute(
                    "SELECT min(attempted_at), max(attempted_at) FROM attempts"
                ).fetchone()
                delivered = db.execute(
                    "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
                ).fetchone()[0]
            rss.append(worker.memory("VmRSS"))
        finally:
            worker.stop()
        body = orjson.dumps(build_sample_event("generation.succeeded"))
        ceiling = aiohttp_ceiling(f"{base}/downstream", body, DRAIN_EVENTS)
    finally:
        sink.stop()
    assert delivered == DRAIN_EVENTS, f"{delivered} of {DRAIN_EVENTS} delivered"
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    # The first sample is taken once the worker has started and claimed its first batch.
    return Drain(DRAIN_EVENTS / span, ceiling, rss[min(10, len(rss) - 1)], rss[-1])


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
