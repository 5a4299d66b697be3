"""Online backup of the SQLite database, through SQLite's backup API: a consistent copy
taken while the service keeps writing (PostgreSQL has pg_dump for this)."""

import os
import sqlite3
from pathlib import Path

# Pages copied per step; between steps the writer gets the lock back, so ingest goes on.
PAGES_PER_STEP = 256


def backup_sqlite(source: Path, destination: Path) -> int:
    """Copy `source` into a new file at `destination`, check it, and return its size in
    bytes. The copy appears under its name only once it is complete and sound."""
    if destination.exists():
        raise FileExistsError(f"{destination} exists already")
    partial = destination.with_name(f".{destination.name}.partial")
    partial.unlink(missing_ok=True)
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    writer = sqlite3.connect(partial)
    try:
        _copy(reader, writer)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        reader.close()
        writer.close()
    os.replace(partial, destination)
    return destination.stat().st_size


def _copy(reader: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    reader.backup(writer, pages=PAGES_PER_STEP)
    # A restored copy is opened like any file: rollback mode keeps it one file.
    writer.execute("PRAGMA journal_mode=DELETE")
    (verdict,) = writer.execute("PRAGMA integrity_check").fetchone()
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"the copy failed its integrity check: {verdict}")
