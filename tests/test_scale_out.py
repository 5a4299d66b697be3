"""Scale-out on PostgreSQL: two `serve` replicas and two `worker`s on one database, all real
processes, started together (so their migrations race) against one real downstream."""

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Sensitive
from tests.databases import PostgresServer, reading
from tests.helpers import HTTP, Downstream, ReceiverProcess, make_event, run_cli, signed, wait_until

DISTINCT_EVENTS = 1000
STORM_COPIES_PER_REPLICA = 25


def shared_database_env(
    postgres_server: PostgresServer, downstream: Downstream, secret: str, forward_secret: str
) -> dict[str, str]:
    return {
        "RECEIVER_DATABASE_URL": postgres_server.new_database(),
        "RECEIVER_SIGNING_SECRETS": secret,
        "RECEIVER_FORWARD_URL": downstream.url,
        "RECEIVER_FORWARD_SIGNING_SECRETS": forward_secret,
        "RECEIVER_FORWARD_CONCURRENCY": "16",
    }


def start_together(processes: list[ReceiverProcess]) -> None:
    threads = [threading.Thread(target=process.start) for process in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(process.running for process in processes), "a process did not start"


async def deliver(
    urls: list[str], requests: list[tuple[bytes, dict[str, str]]], in_flight: int = 32
) -> list[httpx.Response]:
    """Each request to the replica its position picks, `in_flight` at a time."""
    slots = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(index: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
            async with slots:
                url = f"{urls[index % len(urls)]}/webhooks/rivya"
                return await client.post(url, content=body, headers=headers)

        return await asyncio.gather(*(one(i, *request) for i, request in enumerate(requests)))


def test_two_replicas_and_two_workers_store_once_and_deliver_exactly_once(
    postgres_server: PostgresServer,
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    forward_secret: str,
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    downstream = own_downstream()
    secret = secrets_in_use[0]
    env = shared_database_env(postgres_server, downstream, secret, forward_secret)
    replicas = [ReceiverProcess(tmp_path, env, ("serve", "--no-forwarder")) for _ in range(2)]
    workers = [ReceiverProcess(tmp_path, env, ("worker",)) for _ in range(2)]
    start_together([*replicas, *workers])
    urls = [replica.url for replica in replicas]
    try:
        # A duplicate storm across both replicas: one event, many copies, all at once.
        storm = make_event()
        body, headers = signed(secret, storm)
        sensitive.add(headers["webhook-signature"], storm["data"]["result"]["primary_url"])
        copies = [(body, headers)] * (2 * STORM_COPIES_PER_REPLICA)
        answers = asyncio.run(deliver(urls, copies, in_flight=len(copies)))
        assert {answer.status_code for answer in answers} == {200}
        statuses = Counter(answer.json()["status"] for answer in answers)
        assert statuses == {"accepted": 1, "duplicate": len(copies) - 1}

        # Distinct events, split between the replicas.
        events = [make_event() for _ in range(DISTINCT_EVENTS)]
        answers = asyncio.run(deliver(urls, [signed(secret, e) for e in events]))
        assert Counter(answer.status_code for answer in answers) == {200: DISTINCT_EVENTS}
        expected = {storm["id"], *(event["id"] for event in events)}

        wait_until(
            lambda: set(downstream.ids()) >= expected,
            timeout=120,
            what=lambda: f"{len(expected - set(downstream.ids()))} not yet delivered",
        )
        with reading(env["RECEIVER_DATABASE_URL"]) as db:
            wait_until(lambda: pending(db) == 0, timeout=30, what="deliveries to be recorded")
            assert stored_counts(db, storm) == (DISTINCT_EVENTS + 1, 1, 1, 1)
    finally:
        for process in [*replicas, *workers]:
            process.stop()

    delivered = Counter(downstream.ids())
    assert set(delivered) == expected
    assert [event_id for event_id, times in delivered.items() if times > 1] == []
    for process in replicas:
        assert '"http_status":200' in process.output(), "a replica took no events"
    for process in workers:
        assert '"delivery_attempt"' in process.output(), "a worker delivered nothing"
    for process in [*replicas, *workers]:
        assert sensitive.found_in(process.output()) == []


def test_a_worker_hears_of_queued_deliveries_without_polling(
    postgres_server: PostgresServer,
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    forward_secret: str,
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    """Polls a minute apart: only PostgreSQL's NOTIFY can bring these to the worker in time,
    whether the delivery was queued by ingest in another process or by a replay."""
    downstream = own_downstream()
    env = shared_database_env(postgres_server, downstream, secrets_in_use[0], forward_secret)
    env["RECEIVER_FORWARD_POLL_SECONDS"] = "60"
    replica = ReceiverProcess(tmp_path, env, ("serve", "--no-forwarder"))
    worker = ReceiverProcess(tmp_path, env, ("worker",))
    start_together([replica, worker])
    try:
        event = make_event()
        body, headers = signed(secrets_in_use[0], event)
        sensitive.add(headers["webhook-signature"], event["data"]["result"]["primary_url"])
        assert HTTP.post(f"{replica.url}/webhooks/rivya", content=body, headers=headers).is_success
        wait_until(lambda: len(downstream.of(event["id"])) == 1, timeout=10)

        replayed = run_cli("replay", event["id"], env=env, cwd=tmp_path)
        assert replayed.returncode == 0, replayed.stderr
        wait_until(lambda: len(downstream.of(event["id"])) == 2, timeout=10)
    finally:
        replica.stop()
        worker.stop()
    assert sensitive.found_in(worker.output()) == []


def pending(db: sa.Connection) -> int:
    db.rollback()  # a fresh snapshot each time
    return int(db.scalar(sa.text("SELECT count(*) FROM deliveries WHERE state = 'pending'")))


def stored_counts(db: sa.Connection, storm: dict[str, Any]) -> tuple[int, ...]:
    """Events in all; and for the storm's event: its rows, its deliveries, its record."""
    queries: tuple[tuple[str, dict[str, str]], ...] = (
        ("SELECT count(*) FROM events", {}),
        ("SELECT count(*) FROM events WHERE id = :id", {"id": storm["id"]}),
        ("SELECT count(*) FROM deliveries WHERE event_id = :id", {"id": storm["id"]}),
        (
            "SELECT count(*) FROM records WHERE task_id = :task AND last_event_id = :id",
            {"task": storm["data"]["id"], "id": storm["id"]},
        ),
    )
    return tuple(int(db.scalar(sa.text(sql), params)) for sql, params in queries)
