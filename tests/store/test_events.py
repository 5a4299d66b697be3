"""Storing batches: both write paths (SQLite's own thread, and an engine connection) give
the outcomes and records a plain model of the rules gives, for any sequence of events."""

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Dialect

from receiver.ingest.envelope import parse_event
from receiver.model import TERMINAL_STATUSES, Event, Outcome
from receiver.store.connections import EngineConnection, SQLiteConnection, WriteConnection
from receiver.store.database import create_engine, sqlite_path, upgrade_schema
from receiver.store.events import Reprocessed, Submission, reprocess_event, run_on, store_events
from receiver.store.statements import Run
from receiver.store.tables import deliveries, records
from tests.helpers import destination, make_event

T0 = datetime(2026, 5, 10, tzinfo=UTC)

# One drawn event: (event number, task number, kind, minutes after T0)
drawn_event = st.tuples(
    st.integers(0, 5),
    st.integers(0, 2),
    st.sampled_from(["generation.succeeded", "generation.failed", "other", "broken"]),
    st.integers(0, 3),
)
batches = st.lists(st.lists(drawn_event, min_size=1, max_size=6), min_size=1, max_size=4)


def build(prefix: str, number: int, task: int, kind: str, minutes: int) -> Submission:
    event = make_event(
        "generation.failed" if kind == "generation.failed" else "generation.succeeded",
        event_id=f"{prefix}evt{number}",
        task_id=f"{prefix}task{task}",
        updated_at=T0 + timedelta(minutes=minutes),
    )
    if kind == "other":
        event["type"] = "generation.other"
    if kind == "broken":
        event["data"]["final_credits"] = -1
    body = orjson.dumps(event)
    return Submission(parse_event(body, "msg"), "msg", body, datetime.now(UTC))


def model(batches: list[list[Submission]]) -> tuple[list[Outcome | None], dict[str, str]]:
    """The rules, plainly: the first copy of an event counts; a record takes an event
    unless it is terminal or newer; re-applying its own last event is harmless."""
    seen: set[str] = set()
    state: dict[str, tuple[str, datetime, str]] = {}
    outcomes: list[Outcome | None] = []
    for submission in (s for batch in batches for s in batch):
        event: Event = submission.event
        if event.event_id in seen:
            outcomes.append(None)
            continue
        seen.add(event.event_id)
        generation = event.generation
        if event.quarantine_reason:
            outcomes.append(Outcome.QUARANTINED)
        elif generation is None:
            outcomes.append(Outcome.IGNORED)
        else:
            current = state.get(generation.task_id)
            if (
                current is None
                or (current[0] not in TERMINAL_STATUSES and current[1] <= generation.updated_at)
                or current[2] == event.event_id
            ):
                state[generation.task_id] = (
                    generation.status,
                    generation.updated_at,
                    event.event_id,
                )
                outcomes.append(Outcome.APPLIED)
            else:
                outcomes.append(Outcome.STALE)
    return outcomes, {task: last for task, (_, _, last) in state.items()}


async def store_all(
    database_url: str, batches: list[list[Submission]], prefix: str, via_engine: bool = False
) -> tuple[list[Outcome | None], dict[str, str]]:
    """Through SQLite's own writer thread for a SQLite file (as the writer does), else or if
    told so through an engine connection."""
    engine = create_engine(database_url, 5)
    await upgrade_schema(engine)
    path = sqlite_path(database_url)
    connection: WriteConnection = (
        SQLiteConnection(engine, path, 5)
        if path is not None and not via_engine
        else EngineConnection(database_url, 5)
    )
    outcomes: list[Outcome | None] = []
    try:
        for batch in batches:

            def work(run: Run, dialect: Dialect, batch: list[Submission] = batch) -> list[Any]:
                return store_events(run, dialect, batch, destinations=[destination()])

            outcomes += await connection.transact(work)
        async with engine.connect() as reader:
            rows = await reader.execute(
                sa.select(records.c.task_id, records.c.last_event_id).where(
                    records.c.task_id.startswith(prefix)
                )
            )
            last_events = dict(rows.all())
    finally:
        await connection.close()
        await engine.dispose()
    return outcomes, last_events


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=batches)
def test_any_sequence_of_batches_follows_the_rules(
    tmp_path: Path,
    new_database: Callable[[Path], str],
    drawn: list[list[tuple[int, int, str, int]]],
) -> None:
    prefix = secrets.token_hex(4)
    submissions = [[build(prefix, *event) for event in batch] for batch in drawn]
    stored = asyncio.run(store_all(new_database(tmp_path), submissions, prefix))
    assert stored == model(submissions)


def test_an_engine_connection_on_sqlite_follows_the_same_rules(tmp_path: Path) -> None:
    """The engine path on a SQLite file (the writer uses its own thread there instead)."""
    first = build("eng", 1, 1, "generation.succeeded", 0)
    newer = build("eng", 2, 1, "generation.failed", 1)
    submissions = [[first], [newer, first]]
    url = f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"
    assert asyncio.run(store_all(url, submissions, "eng", via_engine=True)) == model(submissions)


def test_a_duplicate_within_one_batch_is_stored_once(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    first = build("dup", 1, 1, "generation.succeeded", 0)
    outcomes, last = asyncio.run(store_all(new_database(tmp_path), [[first, first]], "dup"))
    assert outcomes == [Outcome.APPLIED, None]
    assert last == {"duptask1": "dupevt1"}


async def _reprocess_twice(database_url: str) -> tuple[list[Reprocessed], list[tuple[str, str]]]:
    """An event an older release quarantined (so only destinations wanting that were sent
    it), reprocessed twice; the outcomes, and (destination, state) of each delivery."""
    destinations = [
        destination("applied", outcomes={"applied"}),
        destination("everything"),
        destination("stale", outcomes={"stale"}),
    ]
    event = make_event()
    body = orjson.dumps(event)
    earlier = Submission(Event(event["id"], quarantine_reason="old_release"), "msg", body, T0)
    engine = create_engine(database_url, 5)
    await upgrade_schema(engine)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync: store_events(run_on(sync), sync.dialect, [earlier], destinations)
            )
        outcomes = []
        for _ in range(2):
            async with engine.begin() as connection:
                outcome = await connection.run_sync(
                    reprocess_event, event["id"], datetime.now(UTC), parse_event, destinations
                )
            outcomes.append(outcome)
        async with engine.connect() as reader:
            rows = await reader.execute(
                sa.select(deliveries.c.destination, deliveries.c.state)
                .where(deliveries.c.event_id == event["id"])
                .order_by(deliveries.c.destination)
            )
            return outcomes, [tuple(row) for row in rows]
    finally:
        await engine.dispose()


def test_reprocessing_queues_the_event_where_its_new_outcome_is_wanted_once(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> None:
    """Quarantined, it went to `everything` only; applied by reprocessing, it is queued for
    `applied` (which never heard of it), not again for `everything`, never for `stale`; a
    second reprocess queues nothing."""
    outcomes, queued = asyncio.run(_reprocess_twice(new_database(tmp_path)))
    # The first changes the outcome (quarantined to applied), the second does not.
    assert outcomes == [Reprocessed(Outcome.APPLIED, True), Reprocessed(Outcome.APPLIED, False)]
    assert queued == [("applied", "pending"), ("everything", "pending")]
