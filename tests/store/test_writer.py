"""The group-commit writer and the record rules, in process, on each backend."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.exceptions import StoreUnavailableError
from receiver.ingest.envelope import parse_event
from receiver.model import Outcome
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.events import Submission
from receiver.store.tables import events, records
from receiver.store.writer import EventWriter
from tests.helpers import destination, make_event

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(new_database(tmp_path), 5)
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()


def submission(event: dict[str, object]) -> Submission:
    body = orjson.dumps(event)
    return Submission(parse_event(body, "msg"), "msg", body, datetime.now(UTC))


async def test_concurrent_events_share_commits(engine: AsyncEngine) -> None:
    batches: list[int] = []
    async with EventWriter(
        engine, destinations=[destination()], observe=lambda size, _: batches.append(size)
    ) as writer:
        outcomes = await asyncio.gather(
            *(writer.submit(submission(make_event())) for _ in range(200))
        )
    assert outcomes == [Outcome.APPLIED] * 200
    async with engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(events)) == 200
    assert sum(batches) == 200
    assert len(batches) < 200 / 4, f"{len(batches)} commits for 200 events: not grouped"


async def test_one_unstorable_event_does_not_sink_its_batch(engine: AsyncEngine) -> None:
    good = [submission(make_event()) for _ in range(5)]
    bad = submission(make_event())
    # A naive timestamp cannot be bound: the failure is this event's own, not the database's.
    bad = Submission(bad.event, bad.msg_id, bad.body, datetime.now())  # noqa: DTZ005

    async with EventWriter(engine, destinations=[destination()]) as writer:
        results = await asyncio.gather(
            *(writer.submit(item) for item in [*good[:3], bad, *good[3:]]), return_exceptions=True
        )
    assert isinstance(results[3], StoreUnavailableError)
    assert [r for i, r in enumerate(results) if i != 3] == [Outcome.APPLIED] * 5
    async with engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(events)) == 5


async def test_submissions_after_close_are_refused(engine: AsyncEngine) -> None:
    async with EventWriter(engine, destinations=[destination()]) as writer:
        pass
    with pytest.raises(StoreUnavailableError):
        await writer.submit(submission(make_event()))


async def test_queued_events_are_written_before_close_returns(engine: AsyncEngine) -> None:
    async with EventWriter(engine, destinations=[destination()]) as writer:
        pending = [
            asyncio.ensure_future(writer.submit(submission(make_event()))) for _ in range(50)
        ]
        await asyncio.sleep(0)
    assert [task.result() for task in pending] == [Outcome.APPLIED] * 50


async def test_non_terminal_record_takes_newer_events_only(engine: AsyncEngine) -> None:
    """The ordering rule by Rivya's updated_at, for records not yet terminal."""
    t0 = datetime(2026, 5, 10, tzinfo=UTC)
    seed = make_event(task_id="task_running", updated_at=t0)
    async with EventWriter(engine, destinations=[destination()]) as writer:
        await writer.submit(submission(seed))
        async with engine.begin() as connection:
            await connection.execute(
                sa.update(records)
                .where(records.c.task_id == "task_running")
                .values(status="processing")
            )
        older = make_event(task_id="task_running", updated_at=t0 - timedelta(seconds=1))
        newer = make_event(
            "generation.failed", task_id="task_running", updated_at=t0 + timedelta(seconds=1)
        )
        assert await writer.submit(submission(older)) == Outcome.STALE
        assert await writer.submit(submission(newer)) == Outcome.APPLIED
    async with engine.connect() as connection:
        row = (await connection.execute(sa.select(records))).one()
    assert (row.status, row.last_event_id, row.updated_at) == (
        "failed",
        newer["id"],
        t0 + timedelta(seconds=1),
    )


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        create_engine("sqlite+aiosqlite:///:memory:", 5)
