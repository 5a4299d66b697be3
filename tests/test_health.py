"""The probes: /healthz for a live process, /readyz for a usable, current database."""

from collections.abc import Callable

import sqlalchemy as sa

from tests.databases import reading
from tests.helpers import HTTP, ReceiverProcess


def test_probes_report_ready_then_a_schema_that_is_behind(
    start_server: Callable[..., ReceiverProcess],
) -> None:
    process = start_server()
    assert HTTP.get(f"{process.url}/healthz").json() == {"status": "ok"}
    assert HTTP.get(f"{process.url}/readyz").json() == {"status": "ready"}

    with reading(process.env["RECEIVER_DATABASE_URL"]) as db:
        db.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
        db.commit()
    response = HTTP.get(f"{process.url}/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "schema_not_current"}
    assert HTTP.get(f"{process.url}/healthz").status_code == 200
