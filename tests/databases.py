"""The two backends the suite runs on: SQLite files, and a real PostgreSQL server that the
suite starts itself (from Debian's `postgresql` package, which `make test` installs) as an
unprivileged cluster on a free loopback port."""

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from tests.helpers import free_port

BACKENDS = ("sqlite", "postgresql")
POSTGRES_BIN = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root; under root the cluster belongs to this user.
POSTGRES_USER = "postgres"


class PostgresServer:
    def __init__(self) -> None:
        versions = sorted(POSTGRES_BIN.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if not versions:
            raise RuntimeError("no PostgreSQL server found: `make test` installs Debian's package")
        self._bin = versions[-1].parent
        self.version = versions[-1].parts[-3]
        self.port = free_port()
        self._folder = Path(tempfile.mkdtemp(prefix="receiver-postgres-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(POSTGRES_USER)
            os.chown(self._folder, user.pw_uid, user.pw_gid)
            self._as_user = [shutil.which("runuser") or "runuser", "-u", POSTGRES_USER, "--"]
        data = self._folder / "data"
        self._run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self._folder} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c fsync=on"
        )
        log = self._folder / "server.log"
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        self._data = data
        self._admin = sa.create_engine(
            self._url("postgres", "psycopg"), isolation_level="AUTOCOMMIT"
        )

    @property
    def data(self) -> Path:
        """The cluster's data directory (its postmaster.pid names the server's process)."""
        return self._data

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as_user, str(self._bin / program), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _url(self, database: str, driver: str) -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL as the receiver takes it."""
        name = f"receiver_{secrets.token_hex(6)}"
        with self._admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return self._url(name, "asyncpg")

    def stop(self) -> None:
        self._admin.dispose()
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self._folder, ignore_errors=True)


def sync_url(database_url: str) -> str:
    """The receiver's async URL, for the tests' own synchronous reads."""
    return database_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


@contextmanager
def reading(database_url: str) -> Iterator[sa.Connection]:
    """A connection to read what a running receiver stored, beside it."""
    engine = sa.create_engine(sync_url(database_url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def stored_event_ids(database_url: str) -> set[str]:
    with reading(database_url) as connection:
        return set(connection.scalars(sa.text("SELECT id FROM events")))
