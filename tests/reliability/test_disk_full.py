"""A full disk: the database on a tiny tmpfs that the test mounts (it needs root; in CI,
without it, the test fails rather than skips)."""

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.conftest import Rivya
from tests.databases import stored_event_ids
from tests.helpers import HTTP, ReceiverProcess, make_event, wait_until
from tests.reliability.conftest import Figures

MOUNT, UMOUNT = shutil.which("mount"), shutil.which("umount")
REFUSALS = 20


def cannot(reason: str) -> NoReturn:
    """RELIABILITY.md says every test it names runs in `make test`: in CI (`CI=true`, as
    CI services set it) a test that cannot run fails; on a developer's machine it skips."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI must run every test RELIABILITY.md names")
    pytest.skip(reason)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or not (MOUNT and UMOUNT):
        cannot("mounting a tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        [MOUNT, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        cannot(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    yield disk
    subprocess.run([UMOUNT, "--lazy", str(disk)], check=True)


def grow(disk: Path, size: str) -> None:
    assert MOUNT
    subprocess.run([MOUNT, "-o", f"remount,size={size}", str(disk)], check=True)


@pytest.mark.sqlite_only
def test_full_disk_refuses_with_503_and_recovers_when_space_returns(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    tiny_disk: Path,
    figures: Figures,
) -> None:
    database = tiny_disk / "receiver.db"
    process = start_server(database_url=f"sqlite+aiosqlite:///{database}")
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    acknowledged: list[str] = []
    refused: list[dict[str, Any]] = []
    while len(refused) < REFUSALS:
        event = make_event()
        response = sender.send(event)
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
            refused.append(event)
        else:
            acknowledged.append(event["id"])
        assert len(acknowledged) < 5000, "the disk never filled"
    assert HTTP.get(f"{process.url}/healthz").status_code == 200

    grow(tiny_disk, "64m")
    wait_until(lambda: sender.send(make_event()).status_code == 200, timeout=10)
    assert all(sender.send(event).status_code == 200 for event in refused)
    process.stop()

    stored = stored_event_ids(process.env["RECEIVER_DATABASE_URL"])
    assert set(acknowledged) <= stored
    assert {event["id"] for event in refused} <= stored
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    figures.add(
        "disk full",
        runs=1,
        acknowledged_before_full=len(acknowledged),
        refused_503=len(refused),
        lost=len(set(acknowledged) - stored),
    )
