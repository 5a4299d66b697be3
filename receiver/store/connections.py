"""Where the hot paths' transactions run: the ingest writer's and the forwarder's.

On SQLite the writer has a connection of its own. A batch's statements run on the event
loop's thread, and only what waits goes to a thread of the connection's own: COMMIT (the
fsync, which releases the GIL) and, when another process holds the write lock, BEGIN. A
statement on another thread hands the GIL back and forth at every step of every row, and
each hand-back waits up to a switch interval while the loop serves requests: a batch of 16
took 11 ms that way, most of it waiting for the GIL (measured), where its statements take a
fraction of a millisecond on the loop's thread. The connection is only ever used by one
batch at a time, so the two threads never use it at once.

Elsewhere (PostgreSQL), an engine of its own with a pool of one connection, and the same
synchronous code run through `run_sync`. The shared engine's pool also serves the console,
the admin API, /readyz and /metrics; sharing it, ingest waited behind them for a connection
(with a pool of one, 8 webhooks were answered after 9 s), then counted the pool's timeout
as the events' own fault. The pool checks its connection before each transaction and
replaces one that was lost (a restarted server, a terminated backend); one lost during a
transaction fails that transaction, a 503, and the next one connects again. It waits for the
server at most the busy timeout, to connect or for any one statement (see `create_engine`).

Opening a write connection also compiles the hot paths' statements for its backend, so
that no transaction compiles one (see `receiver.store.statements`).
"""

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import UNAVAILABLE, configure_sqlite, create_engine, sqlite_path
from receiver.store.events import run_on
from receiver.store.statements import Prepared, Run, prepare_statements

T = TypeVar("T")
# What a hot path's loop retries, whole, after a pause (the forwarder's outcomes and claims):
# the database's absence (UNAVAILABLE, and what `database_unavailable` reads in a driver's
# error), and any other failure of the database or its driver, such as a deadlock between
# replicas. The writer tells the two apart instead (see `store.writer`).
DATABASE_ERRORS = (*UNAVAILABLE, SQLAlchemyError, sqlite3.Error)


Transaction = Callable[[Run, Dialect], T]


class WriteConnection(Protocol):
    async def transact(self, work: Transaction[T]) -> T:
        """Run `work` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def close(self) -> None: ...


class EngineConnection:
    def __init__(self, database_url: str, busy_timeout_seconds: float) -> None:
        self._engine = create_engine(database_url, busy_timeout_seconds, connections=1)

    async def transact(self, work: Transaction[T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(lambda sync: work(run_on(sync), sync.dialect))

    async def close(self) -> None:
        await self._engine.dispose()


class SQLiteConnection:
    def __init__(self, engine: AsyncEngine, path: Path, busy_timeout_seconds: float) -> None:
        self._dialect = engine.dialect
        self._busy_timeout_ms = round(busy_timeout_seconds * 1000)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        # isolation_level=None: the driver starts no transaction of its own; we do.
        # timeout=0: BEGIN on the loop's thread must never wait (see `_begin`).
        self._connection = sqlite3.connect(
            path, timeout=0, isolation_level=None, check_same_thread=False
        )
        configure_sqlite(self._connection, None)

    async def transact(self, work: Transaction[T]) -> T:
        if self._connection.in_transaction:  # a failed COMMIT or ROLLBACK left one open
            self._connection.rollback()
        await self._begin()
        try:
            result = work(self._run, self._dialect)
            await self._in_thread(self._connection.execute, "COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.rollback()
            raise
        return result

    async def _begin(self) -> None:
        """BEGIN IMMEDIATE takes the write lock at once when no other process holds it,
        the usual case; otherwise the thread waits for it, up to the busy timeout."""
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            await self._in_thread(self._begin_waiting)

    def _begin_waiting(self) -> None:
        self._connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        finally:
            self._connection.execute("PRAGMA busy_timeout = 0")

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    def _run(self, statement: Prepared, parameters: tuple[Any, ...]) -> list[Any]:
        return self._connection.execute(statement.sql, parameters).fetchall()

    async def close(self) -> None:
        self._connection.close()
        self._thread.shutdown()


def open_write_connection(engine: AsyncEngine, busy_timeout_seconds: float) -> WriteConnection:
    """A connection for one hot path's transactions, of its own (see the module's doc)."""
    prepare_statements(engine.dialect)
    database_url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(database_url)
    if path is None:
        return EngineConnection(database_url, busy_timeout_seconds)
    return SQLiteConnection(engine, path, busy_timeout_seconds)
