"""The engine and the schema's life: creation, SQLite durability, migrations, readiness."""

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
from sqlalchemy.exc import OperationalError
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


def create_engine(database_url: str, busy_timeout_seconds: float) -> AsyncEngine:
    path = sqlite_path(database_url)
    if path is None:
        return create_async_engine(database_url, pool_pre_ping=True)
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


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for operators' reads and writes: a busy or lost database is a 503."""
    try:
        async with engine.begin() as connection:
            yield connection
    except (OperationalError, OSError) as exc:
        raise StoreUnavailableError("the database is unavailable; retry later") from exc


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
