"""Scheduled retention's audit line when a run fails part-way, on a real SQLite file: the
chunks committed before the failure are gone for good, and the line says how many went."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from receiver.pruner import Pruner
from receiver.settings import Settings
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.retention import CHUNK
from receiver.store.tables import events
from tests.helpers import new_secret
from tests.store.test_retention import add_events

pytestmark = pytest.mark.anyio

# Refuses deletes once fewer than 400 events are left (a chunk of 500 out of 1,000 leaves 500):
# the first chunk goes through, the second is refused part-way.
REFUSE_SECOND_CHUNK = (
    "CREATE TRIGGER refuse_delete BEFORE DELETE ON events "
    "WHEN (SELECT count(*) FROM events) <= 400 "
    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'receiver.db'}", 5)
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()


async def test_a_run_that_fails_part_way_audits_what_its_committed_chunks_removed(
    engine: AsyncEngine,
) -> None:
    await add_events(engine, 2 * CHUNK, received_at=datetime.now(UTC) - timedelta(days=40))
    assert CHUNK == 500, "REFUSE_SECOND_CHUNK counts on chunks of 500"
    async with engine.begin() as connection:
        await connection.exec_driver_sql(REFUSE_SECOND_CHUNK)
    settings = Settings(signing_secrets=new_secret(), retention_days=30)
    with capture_logs() as logs, pytest.raises(sa.exc.IntegrityError):
        await Pruner(engine, settings).run_once()
    async with engine.connect() as connection:
        left = await connection.scalar(sa.select(sa.func.count()).select_from(events))
    assert left == CHUNK
    audits = [line for line in logs if line["event"] == "audit" and line["what"] == "prune"]
    assert [line["count"] for line in audits] == [CHUNK]
