"""The engine and the schema's life: creation, SQLite durability, migrations, readiness,
and which failures mean that the database is not there."""

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from receiver.exceptions import StoreUnavailableError

MIGRATIONS = Path(__file__).with_name("migrations")


# An arbitrary constant: the advisory lock that serializes migrations on PostgreSQL.
MIGRATION_LOCK = 0x52_45_43_45_49_56_45_52  # "RECEIVER"


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL; None for other backends."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    if url.database in (None, "", ":memory:"):
        raise ValueError("SQLite needs a file: an in-memory database loses every event")
    return Path(url.database)


def create_engine(
    database_url: str, busy_timeout_seconds: float, connections: int | None = None
) -> AsyncEngine:
    """`connections`: at most that many, for a part that must not share (a writer's own);
    otherwise SQLAlchemy's default pool, shared by everything else."""
    path = sqlite_path(database_url)
    if path is None:
        if connections is None:
            return create_async_engine(database_url, pool_pre_ping=True)
        # A part with connections of its own waits for the server as long as a write waits
        # for SQLite's lock, connecting or running any one statement (asyncpg's timeouts):
        # a server that stopped answering, or a lock held too long, is a 503, not a hang.
        return create_async_engine(
            database_url,
            pool_pre_ping=True,
            pool_size=connections,
            max_overflow=0,
            connect_args={"timeout": busy_timeout_seconds, "command_timeout": busy_timeout_seconds},
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(database_url, connect_args={"timeout": busy_timeout_seconds})
    event.listen(engine.sync_engine, "connect", configure_sqlite)
    return engine


def configure_sqlite(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes each commit reach
    # the disk before it returns, which is what a 2xx promises (sqlite.org/pragma.html).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# The failures that say the database is not there, whatever was asked of it: the server or
# the file cannot be reached, was lost, is full, locked, shutting down, or out of connections.
# A batch that meets one is answered 503 at once; anything else may be one event's problem.
UNAVAILABLE = (
    OSError,  # refused, reset, unreachable, timed out (TimeoutError is one)
    OperationalError,  # the driver's own word for it (SQLite busy, full, I/O; psycopg)
    InterfaceError,  # the connection is closed or broken (asyncpg's)
    DisconnectionError,  # the pool found the connection dead
    PoolTimeoutError,  # the pool had no connection to give in time
    sqlite3.OperationalError,  # the SQLite writer's own connection: busy, full, I/O
)
# PostgreSQL's SQLSTATE classes for the same (postgresql.org/docs/current/errcodes-appendix):
# 08 connection exception, 28 invalid authorization (a login refused), 3D invalid catalog
# name (no such database), 53 insufficient resources (disk full, out of memory, too many
# connections), 57 operator intervention (shutdown, terminated, cannot connect now, query
# cancelled), 58 system error (I/O); and 25006, a read-only transaction: a standby, or a
# primary a failover demoted, that the database's address still names takes no writes
# until it points at the new primary. asyncpg's errors reach us as a plain DBAPIError.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "28", "3D", "53", "57", "58", "25006")
# SQLite's result codes for a file that is not a database, or no longer one.
UNAVAILABLE_SQLITE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is not there (see UNAVAILABLE), rather than that the
    work given to it failed. The one place that decides it, for every caller."""
    if isinstance(exc, UNAVAILABLE):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # The driver's own error: wrapped by SQLAlchemy, or raised by the SQLite writer's.
    driver_error = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(driver_error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATE_CLASSES):
        return True
    return getattr(driver_error, "sqlite_errorcode", None) in UNAVAILABLE_SQLITE_CODES


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for operators' reads and writes: a busy or lost database is a 503."""
    try:
        async with engine.begin() as connection:
            yield connection
    except Exception as exc:
        if database_unavailable(exc):
            raise StoreUnavailableError("the database is unavailable; retry later") from exc
        raise


async def upgrade_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def schema_is_current(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        return await connection.run_sync(_is_current)


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together would run the same migrations at once; the first to
        # take this lock migrates, the others wait, then find the schema at head. The lock
        # ends with the transaction (SQLite's write lock already serializes them there).
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _is_current(connection: Connection) -> bool:
    """At our head, or past it: a newer release migrated first. Its migrations keep the
    previous release working, so replicas still on it stay ready through a rolling update.
    At an older revision of ours, or none, the schema is behind this code."""
    current = set(MigrationContext.configure(connection).get_current_heads())
    heads, known = _revisions()
    return bool(current) and not (current & known) - heads


@cache
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """This code's head revisions, and every revision it knows."""
    script = ScriptDirectory.from_config(alembic_config())
    known = frozenset(revision.revision for revision in script.walk_revisions())
    return frozenset(script.get_heads()), known


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
