"""The prepared ingest statements: positional SQL for each backend, values converted by the
columns' own types, and a writer connection that survives a failed batch."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Dialect, make_url

from receiver.store import statements
from receiver.store.connections import SQLiteConnection
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.statements import Run

SQLITE = make_url("sqlite+aiosqlite://").get_dialect()()
POSTGRESQL = make_url("postgresql+asyncpg://").get_dialect()()
BUILDERS = [
    statements.insert_events,
    statements.upsert_records,
    statements.mark_stale,
    statements.insert_deliveries,
    statements.update_health,
]


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRESQL], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("build", BUILDERS)
def test_every_statement_compiles_positionally_for_each_backend(
    dialect: Dialect, build: statements.Builder
) -> None:
    prepared = build(dialect, 4)
    rows = {slot_row for slot_row, _, _ in prepared.slots}
    assert rows == {0, 1, 2, 3}
    placeholder = "?" if dialect.name == "sqlite" else "$"
    assert prepared.sql.count(placeholder) >= len(prepared.slots)
    assert build(dialect, 4) is prepared  # compiled once


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRESQL], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("build", BUILDERS)
def test_any_number_of_rows_compiles_a_handful_of_statements(
    dialect: Dialect, build: statements.Builder
) -> None:
    """Batches of 1 to 512 rows (an outbox of 256 events x 2 destinations) go through at most
    10 compiled statements of each kind, each covering its rows once and in order."""
    compiled: set[str] = set()
    sent: list[tuple[Any, ...]] = []

    def run(statement: statements.Prepared, parameters: tuple[Any, ...]) -> list[Any]:
        compiled.add(statement.sql)
        sent.append(parameters)
        return []

    for count in range(1, 513):
        sent.clear()
        statements.run_rows(run, dialect, _numbering(build), [{"n": n} for n in range(count)])
        assert [n for parameters in sent for n in parameters] == list(range(count))
    assert len(compiled) <= 10


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRESQL], ids=["sqlite", "postgresql"])
def test_no_statement_is_compiled_after_warm_up(
    dialect: Dialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `prepare_statements` (a write connection's opening), nothing compiles."""
    statements.prepare_statements(dialect)

    def compile_(*_: object) -> None:
        raise AssertionError("compiled on the hot path")

    monkeypatch.setattr(statements, "_compile", compile_)
    for build in [*BUILDERS, statements.insert_attempts, statements.record_outcomes]:
        for rows in statements.SIZES:
            build(dialect, rows)
    statements.claim_deliveries(dialect)


def _numbering(build: statements.Builder) -> statements.Builder:
    """`build`'s statement, with each parameter replaced by its row's number."""

    def numbered(dialect: Dialect, rows: int) -> statements.Prepared:
        prepared = build(dialect, rows)
        return statements.Prepared(prepared.sql, tuple((r, "n", None) for r in range(rows)))

    return numbered


def test_values_are_converted_by_the_column_types() -> None:
    prepared = statements.insert_deliveries(SQLITE, 1)
    moment = datetime(2026, 5, 10, 12, 0, 1, 5, tzinfo=UTC)
    row = {
        "event_id": "evt",
        "destination": "billing",
        "state": "pending",
        "next_attempt_at": moment,
        "created_at": moment,
    }
    assert prepared.parameters([row]) == (
        "evt",
        "billing",
        "pending",
        "2026-05-10 12:00:01.000005",
        "2026-05-10 12:00:01.000005",
    )


def test_a_failed_batch_rolls_back_and_the_next_one_commits(tmp_path: Path) -> None:
    row = {
        "id": "evt_1",
        "webhook_id": "msg",
        "type": None,
        "api_version": None,
        "created_at": None,
        "received_at": datetime.now(UTC),
        "task_id": None,
        "outcome": "ignored",
        "quarantine_reason": None,
        "body": b"{}",
        "traceparent": None,
        "tracestate": None,
    }

    async def scenario() -> list[int]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", 5)
        await upgrade_schema(engine)
        connection = SQLiteConnection(engine, tmp_path / "s.db", 5)
        insert = statements.insert_events(engine.dialect, 1)

        def failing(run: Run, _: Dialect) -> None:
            run(insert, insert.parameters([row]))
            raise RuntimeError("this event's own problem")

        def working(run: Run, _: Dialect) -> None:
            run(insert, insert.parameters([row]))

        counts = []
        with pytest.raises(RuntimeError):
            await connection.transact(failing)
        for work in (None, working):
            if work:
                await connection.transact(work)
            async with engine.connect() as reader:
                counts.append(await reader.scalar(sa.text("SELECT count(*) FROM events")) or 0)
        await connection.close()
        await engine.dispose()
        return counts

    assert asyncio.run(scenario()) == [0, 1]
