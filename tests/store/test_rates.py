"""A destination's `rate_last_minute` and `max_per_second` in its health
(receiver/store/health.py), on a real database of each backend: the attempts of the last
60 s by destination, whichever process made them, and none older."""

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import create_engine, upgrade_schema
from receiver.store.health import RATE_SECONDS, collect_health, destination_health_of
from receiver.store.tables import attempts, deliveries, events
from tests.helpers import destination

pytestmark = pytest.mark.anyio

LIMITED = dataclasses.replace(destination("limited"), max_per_second=2.5)
UNLIMITED = destination("unlimited")
# Attempts in the last minute, and just before it, by destination.
RECENT = {"limited": 30, "unlimited": 6, "removed": 3}
EARLIER = {"limited": 5, "unlimited": 50}


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(new_database(tmp_path), 10)
    await upgrade_schema(engine)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events).values(
                id="evt_1", webhook_id="evt_1", received_at=now, outcome="applied", body=b"{}"
            )
        )
        for name in RECENT:
            delivery_id = (
                await connection.execute(
                    sa.insert(deliveries)
                    .values(
                        event_id="evt_1",
                        destination=name,
                        state="pending",
                        next_attempt_at=now,
                        created_at=now,
                    )
                    .returning(deliveries.c.id)
                )
            ).scalar_one()
            # Recent ones from 1 s to 50 s ago; earlier ones from 61 s ago on.
            times = [now - timedelta(seconds=1 + n % 50) for n in range(RECENT[name])] + [
                now - timedelta(seconds=RATE_SECONDS + 1 + n) for n in range(EARLIER.get(name, 0))
            ]
            await connection.execute(
                sa.insert(attempts),
                [
                    {"delivery_id": delivery_id, "attempted_at": t, "duration_ms": 1.0}
                    for t in times
                ],
            )
    yield engine
    await engine.dispose()


def _by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["destination"]: entry for entry in entries}


async def test_the_rate_counts_the_last_minute_by_destination(engine: AsyncEngine) -> None:
    """30 attempts in the last 60 s read 0.5/s, whatever came before; a destination no
    longer configured shows its rate too; the configured `max_per_second` beside it."""
    async with engine.connect() as connection:
        entries = _by_name(await collect_health(connection, [LIMITED, UNLIMITED]))
        one = await destination_health_of(connection, "limited", [LIMITED, UNLIMITED], 10)
    assert entries["limited"]["rate_last_minute"] == 0.5
    assert entries["limited"]["max_per_second"] == 2.5
    assert entries["unlimited"]["rate_last_minute"] == 0.1
    assert entries["unlimited"]["max_per_second"] is None
    assert entries["removed"]["rate_last_minute"] == 0.05
    assert entries["removed"]["max_per_second"] is None
    assert one is not None
    assert (one["rate_last_minute"], one["max_per_second"]) == (0.5, 2.5)


async def test_a_destination_without_attempts_reads_zero(engine: AsyncEngine) -> None:
    quiet = destination("quiet")
    async with engine.connect() as connection:
        entries = _by_name(await collect_health(connection, [quiet]))
        one = await destination_health_of(connection, "quiet", [quiet], 10)
    assert entries["quiet"]["rate_last_minute"] == 0.0
    assert one is not None
    assert one["rate_last_minute"] == 0.0


@pytest.mark.sqlite_only
async def test_the_rate_reads_the_attempts_index_not_a_destination_s_deliveries(
    engine: AsyncEngine,
) -> None:
    """The console's destination page reads it at each load: its plan walks the last
    minute of `ix_attempts_attempted_at`, whatever the destination's deliveries number
    (narrowed by destination, SQLite walked all of that destination's deliveries)."""
    statements: list[tuple[str, Any]] = []

    def seen(*args: Any) -> None:
        statements.append((args[2], args[3]))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", seen)
    async with engine.connect() as connection:
        await destination_health_of(connection, "limited", [LIMITED], 10)
        (rates,) = [(s, p) for s, p in statements if "FROM attempts JOIN deliveries" in s]
        plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {rates[0]}", rates[1])
        steps = [str(row._mapping["detail"]) for row in plan]
    assert any("ix_attempts_attempted_at" in step for step in steps), steps
