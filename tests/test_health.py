"""The probes: /healthz for a live process, /readyz for a usable, current database."""

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import ReceiverProcess


def test_probes_report_ready_then_a_schema_that_is_not_current(
    start_server: Callable[..., ReceiverProcess], tmp_path: Path
) -> None:
    process = start_server()
    assert httpx.get(f"{process.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{process.url}/readyz").json() == {"status": "ready"}

    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'from_the_future'")
    response = httpx.get(f"{process.url}/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "schema_not_current"}
    assert httpx.get(f"{process.url}/healthz").status_code == 200
