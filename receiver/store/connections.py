"""Where the writer's transactions run.

On SQLite the writer has a connection of its own, on a thread of its own, and a whole batch
(BEGIN to COMMIT) is one hand-over to that thread: the event loop neither waits on each
statement nor spends time in SQLAlchemy, and SQLite's work (which releases the GIL) runs
beside the HTTP handling. BEGIN IMMEDIATE takes the write lock before anything is read.
Elsewhere, a connection of the engine, with the same synchronous code run through
`run_sync`.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import configure_sqlite, sqlite_path
from receiver.store.events import Run, run_on
from receiver.store.statements import Prepared

T = TypeVar("T")


Transaction = Callable[[Run, Dialect], T]


class WriteConnection(Protocol):
    async def transact(self, work: Transaction[T]) -> T:
        """Run `work` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    def close(self) -> None: ...


class EngineConnection:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def transact(self, work: Transaction[T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(lambda sync: work(run_on(sync), sync.dialect))

    def close(self) -> None:
        pass


class SQLiteConnection:
    def __init__(self, engine: AsyncEngine, path: Path, busy_timeout_seconds: float) -> None:
        self._dialect = engine.dialect
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._connection = self._thread.submit(self._open, path, busy_timeout_seconds).result()

    @staticmethod
    def _open(path: Path, busy_timeout_seconds: float) -> sqlite3.Connection:
        # isolation_level=None: the driver starts no transaction of its own; we do.
        connection = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None)
        configure_sqlite(connection, None)
        return connection

    async def transact(self, work: Transaction[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transact, work)

    def _transact(self, work: Transaction[T]) -> T:
        if self._connection.in_transaction:  # a failed COMMIT or ROLLBACK left one open
            self._connection.rollback()
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._run, self._dialect)
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.rollback()
            raise
        return result

    def _run(self, statement: Prepared, parameters: tuple[Any, ...]) -> list[Any]:
        return self._connection.execute(statement.sql, parameters).fetchall()

    def close(self) -> None:
        self._thread.submit(self._connection.close).result()
        self._thread.shutdown()


def open_write_connection(engine: AsyncEngine, busy_timeout_seconds: float) -> WriteConnection:
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path is None:
        return EngineConnection(engine)
    return SQLiteConnection(engine, path, busy_timeout_seconds)
