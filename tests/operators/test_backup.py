"""`receiver backup`: an online copy of the SQLite file while events keep arriving, and a
restore from it."""

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Rivya
from tests.databases import stored_event_ids
from tests.helpers import Load, ReceiverProcess, make_event, run_cli, wait_until


@pytest.mark.sqlite_only
def test_backup_under_load_copies_every_earlier_acknowledgement_and_loses_none_after(
    start_server: Callable[..., ReceiverProcess], rivya: Rivya, tmp_path: Path
) -> None:
    """The copy holds every event acknowledged before the backup started; ingest goes on
    acknowledging while the command runs, refuses nothing, and every event acknowledged
    after the backup started, too, is in the live database. The copy is restorable."""
    process = start_server()
    copy = tmp_path / "backups" / "receiver-copy.db"
    copy.parent.mkdir()
    with Load(process.url, rivya.secret, rivya.sensitive.add, threads=4) as load:
        wait_until(lambda: len(load.acknowledged) >= 100, timeout=30)
        acknowledged_before = list(load.acknowledged)
        result = run_cli("backup", str(copy), env=process.env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        during = len(load.acknowledged) - len(acknowledged_before)
    # (While the command ran, its start-up included: the copy itself takes milliseconds.)
    assert during > 0, "ingest paused during the backup"
    assert load.refused == {}, "ingest refused events while the backup ran"
    live = stored_event_ids(process.env["RECEIVER_DATABASE_URL"])
    assert set(load.acknowledged) - live == set(), "acknowledged after the backup, then lost"
    copied = stored_event_ids(f"sqlite:///{copy}")
    assert set(acknowledged_before) <= copied
    assert copied <= live, "the copy holds an event the database never had"
    with sqlite3.connect(copy) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert not list(copy.parent.glob(".*partial"))

    # Restore: stop, put the copy in place of the database (and its WAL), start.
    process.stop()
    database = tmp_path / "receiver.db"
    for leftover in (database, tmp_path / "receiver.db-wal", tmp_path / "receiver.db-shm"):
        leftover.unlink(missing_ok=True)
    copy.replace(database)
    process.start()
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    assert sender.admin(f"/events/{acknowledged_before[0]}").status_code == 200
    assert sender.send(make_event()).json()["status"] == "accepted"


@pytest.mark.sqlite_only
def test_backup_refuses_to_overwrite_and_explains_postgres(
    start_server: Callable[..., ReceiverProcess], tmp_path: Path
) -> None:
    process = start_server()
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"precious")
    refused = run_cli("backup", str(existing), env=process.env, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "exists already" in refused.stderr
    assert existing.read_bytes() == b"precious"

    postgres = {**process.env, "RECEIVER_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:1/x"}
    elsewhere = run_cli("backup", str(tmp_path / "pg.db"), env=postgres, cwd=tmp_path)
    assert elsewhere.returncode == 1
    assert "pg_dump" in elsewhere.stderr
