"""The group-commit writer and the record rules, in process, on each backend."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from receiver.exceptions import StoreUnavailableError
from receiver.ingest.envelope import parse_event
from receiver.model import Outcome
from receiver.store import writer as writer_module
from receiver.store.connections import Transaction
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.events import Submission
from receiver.store.tables import events, records
from receiver.store.writer import EventWriter
from tests.databases import PostgresServer
from tests.helpers import destination, make_event

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(new_database(tmp_path), 5)
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()


def submission(event: dict[str, object]) -> Submission:
    body = orjson.dumps(event)
    return Submission(parse_event(body, "msg"), "msg", body, datetime.now(UTC))


async def test_concurrent_events_share_commits(engine: AsyncEngine) -> None:
    batches: list[int] = []
    async with EventWriter(
        engine, destinations=[destination()], observe=lambda size, _: batches.append(size)
    ) as writer:
        outcomes = await asyncio.gather(
            *(writer.submit(submission(make_event())) for _ in range(200))
        )
    assert outcomes == [Outcome.APPLIED] * 200
    async with engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(events)) == 200
    assert sum(batches) == 200
    assert len(batches) < 200 / 4, f"{len(batches)} commits for 200 events: not grouped"


async def test_one_unstorable_event_does_not_sink_its_batch(engine: AsyncEngine) -> None:
    good = [submission(make_event()) for _ in range(5)]
    bad = submission(make_event())
    # A naive timestamp cannot be bound: the failure is this event's own, not the database's.
    bad = Submission(bad.event, bad.msg_id, bad.body, datetime.now())  # noqa: DTZ005

    async with EventWriter(engine, destinations=[destination()]) as writer:
        results = await asyncio.gather(
            *(writer.submit(item) for item in [*good[:3], bad, *good[3:]]), return_exceptions=True
        )
    assert isinstance(results[3], StoreUnavailableError)
    assert [r for i, r in enumerate(results) if i != 3] == [Outcome.APPLIED] * 5
    async with engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(events)) == 5


async def test_submissions_after_close_are_refused(engine: AsyncEngine) -> None:
    async with EventWriter(engine, destinations=[destination()]) as writer:
        pass
    with pytest.raises(StoreUnavailableError):
        await writer.submit(submission(make_event()))


async def test_queued_events_are_written_before_close_returns(engine: AsyncEngine) -> None:
    async with EventWriter(engine, destinations=[destination()]) as writer:
        pending = [
            asyncio.ensure_future(writer.submit(submission(make_event()))) for _ in range(50)
        ]
        await asyncio.sleep(0)
    assert [task.result() for task in pending] == [Outcome.APPLIED] * 50


async def test_non_terminal_record_takes_newer_events_only(engine: AsyncEngine) -> None:
    """The ordering rule by Rivya's updated_at, for records not yet terminal."""
    t0 = datetime(2026, 5, 10, tzinfo=UTC)
    seed = make_event(task_id="task_running", updated_at=t0)
    async with EventWriter(engine, destinations=[destination()]) as writer:
        await writer.submit(submission(seed))
        async with engine.begin() as connection:
            await connection.execute(
                sa.update(records)
                .where(records.c.task_id == "task_running")
                .values(status="processing")
            )
        older = make_event(task_id="task_running", updated_at=t0 - timedelta(seconds=1))
        newer = make_event(
            "generation.failed", task_id="task_running", updated_at=t0 + timedelta(seconds=1)
        )
        assert await writer.submit(submission(older)) == Outcome.STALE
        assert await writer.submit(submission(newer)) == Outcome.APPLIED
    async with engine.connect() as connection:
        row = (await connection.execute(sa.select(records))).one()
    assert (row.status, row.last_event_id, row.updated_at) == (
        "failed",
        newer["id"],
        t0 + timedelta(seconds=1),
    )


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        create_engine("sqlite+aiosqlite:///:memory:", 5)


async def test_a_full_shared_pool_does_not_hold_up_ingest(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """With every connection of the shared pool taken (a slow console page, a scrape),
    webhooks are still stored: the writer has a connection of its own."""
    engine = create_async_engine(
        new_database(tmp_path), pool_size=1, max_overflow=0, pool_timeout=10
    )
    await upgrade_schema(engine)
    try:
        async with engine.connect() as held:
            await held.execute(sa.text("SELECT 1"))
            async with EventWriter(engine, destinations=[destination()]) as writer:
                outcomes = await asyncio.gather(
                    *(writer.submit(submission(make_event())) for _ in range(8))
                )
            assert outcomes == [Outcome.APPLIED] * 8
    finally:
        await engine.dispose()


def _asyncpg_error(error: Exception) -> sa_exc.DBAPIError:
    """`error` as SQLAlchemy hands asyncpg's errors on: a plain DBAPIError around it."""
    dbapi: Any = AsyncAdapt_asyncpg_dbapi  # untyped in SQLAlchemy
    adapted = dbapi(asyncpg).Error(str(error), error)
    return sa_exc.DBAPIError("INSERT ...", None, adapted)


def _sqlite_error(kind: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    error = kind(message)
    error.sqlite_errorcode = code
    return error


ABSENT_DATABASE = {
    "pool timeout": sa_exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached"),
    "interface": sa_exc.InterfaceError("INSERT ...", None, Exception("connection is closed")),
    "disconnection": sa_exc.DisconnectionError("connection lost"),
    "operational": sa_exc.OperationalError("INSERT ...", None, Exception("disk I/O error")),
    "invalidated": sa_exc.DBAPIError(
        "INSERT ...", None, Exception("connection reset"), connection_invalidated=True
    ),
    "admin shutdown": _asyncpg_error(asyncpg.exceptions.AdminShutdownError("terminated")),
    "cannot connect now": _asyncpg_error(asyncpg.exceptions.CannotConnectNowError("starting")),
    "connection gone": _asyncpg_error(asyncpg.exceptions.ConnectionDoesNotExistError("gone")),
    "too many connections": _asyncpg_error(
        asyncpg.exceptions.TooManyConnectionsError("too many clients")
    ),
    "disk full": _asyncpg_error(asyncpg.exceptions.DiskFullError("no space left")),
    "sqlite busy": _sqlite_error(
        sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY
    ),
    "sqlite not a database": _sqlite_error(
        sqlite3.DatabaseError, "file is not a database", sqlite3.SQLITE_NOTADB
    ),
    "refused": ConnectionRefusedError(111, "Connection refused"),
}


class FailingConnection:
    """A write connection whose every transaction fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.transactions = 0

    async def transact(self, work: Transaction[Any]) -> Any:
        self.transactions += 1
        raise self.error

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("error", ABSENT_DATABASE.values(), ids=ABSENT_DATABASE.keys())
async def test_an_absent_database_fails_the_whole_batch_at_once(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way the database can be missing is a 503 for each request of the batch, after
    one transaction: not one more per event, each waiting its own timeout."""
    connection = FailingConnection(error)
    monkeypatch.setattr(writer_module, "open_write_connection", lambda *_: connection)
    async with EventWriter(cast(AsyncEngine, None), destinations=[destination()]) as writer:
        results = await asyncio.gather(
            *(writer.submit(submission(make_event())) for _ in range(4)),
            return_exceptions=True,
        )
    assert [type(result) for result in results] == [StoreUnavailableError] * 4
    assert connection.transactions == 1


async def test_one_events_own_failure_is_still_retried_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: a failure that is not the database's absence tries each event alone."""
    connection = FailingConnection(sa_exc.IntegrityError("INSERT ...", None, Exception("dup")))
    monkeypatch.setattr(writer_module, "open_write_connection", lambda *_: connection)
    async with EventWriter(cast(AsyncEngine, None), destinations=[destination()]) as writer:
        await asyncio.gather(
            *(writer.submit(submission(make_event())) for _ in range(4)),
            return_exceptions=True,
        )
    assert connection.transactions == 1 + 4


async def test_a_connection_lost_in_a_batch_fails_it_at_once_then_reconnects(
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL terminates the writer's backend in the middle of a batch: every request
    of the batch gets a 503 (none is stored, none retried alone), and the next batch
    connects again and stores them."""
    database_url = postgres_server.new_database()
    engine = create_engine(database_url, 5)
    await upgrade_schema(engine)
    batch = [submission(make_event()) for _ in range(4)]
    try:
        async with EventWriter(engine, destinations=[destination()]) as writer:
            assert await writer.submit(submission(make_event())) == Outcome.APPLIED
            async with engine.connect() as blocker, engine.connect() as admin:
                # Autocommit: each look at the activity is a new snapshot of it.
                await admin.execution_options(isolation_level="AUTOCOMMIT")
                # The batch's third event, inserted and not committed: the batch waits on it.
                await blocker.execute(
                    sa.insert(events).values(
                        id=batch[2].event.event_id,
                        webhook_id="msg",
                        received_at=datetime.now(UTC),
                        outcome="ignored",
                        body=b"{}",
                    )
                )
                pending = [asyncio.ensure_future(writer.submit(item)) for item in batch]
                # The backend waiting for the lock is the writer's.
                pid = await _look(admin, "wait_event_type = 'Lock'", present=True)
                await admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await _look(admin, f"pid = {int(pid)}", present=False)
                await blocker.rollback()
                results = await asyncio.gather(*pending, return_exceptions=True)
            assert [type(result) for result in results] == [StoreUnavailableError] * 4
            outcomes = await asyncio.gather(*(writer.submit(item) for item in batch))
            assert outcomes == [Outcome.APPLIED] * 4
    finally:
        await engine.dispose()


async def _look(admin: Any, condition: str, present: bool) -> Any:
    """Wait until a backend of this database meets `condition` (or none does); its pid."""
    where = f"datname = current_database() AND {condition}"
    query = sa.text(f"SELECT pid FROM pg_stat_activity WHERE {where}")  # noqa: S608 - ours
    while True:
        pid = await admin.scalar(query)
        if (pid is not None) == present:
            return pid
        await asyncio.sleep(0.05)


async def test_a_write_waits_for_postgresql_no_longer_than_the_busy_timeout(
    postgres_server: PostgresServer,
) -> None:
    """A batch held up by a lock (or a server that stopped answering) is a 503 after the
    busy timeout, as on SQLite, rather than a request that hangs; then writes go on."""
    engine = create_engine(postgres_server.new_database(), 5)
    await upgrade_schema(engine)
    held = submission(make_event())
    try:
        async with EventWriter(
            engine, destinations=[destination()], busy_timeout_seconds=0.5
        ) as writer:
            async with engine.connect() as blocker:
                await blocker.execute(
                    sa.insert(events).values(
                        id=held.event.event_id,
                        webhook_id="msg",
                        received_at=datetime.now(UTC),
                        outcome="ignored",
                        body=b"{}",
                    )
                )
                with pytest.raises(StoreUnavailableError):
                    await writer.submit(held)
                await blocker.rollback()
            assert await writer.submit(held) == Outcome.APPLIED
    finally:
        await engine.dispose()
