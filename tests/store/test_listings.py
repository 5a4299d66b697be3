"""Deliveries listed newest first on a real database of each backend, whether the filter
keeps few (found from an index, then sorted) or many (on SQLite, walked newest first): the
same rows, in the same order, page after page."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store import queries
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.queries import DeliveryFilter, list_deliveries
from receiver.store.tables import deliveries, events

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)
STATES = ("pending", "delivered", "dead")
DESTINATIONS = ("default", "archive", "gone")
CONFIGURED = ["default", "archive"]


@pytest.fixture
async def engine(tmp_path: Path, new_database: Callable[[Path], str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(new_database(tmp_path), 10)
    await upgrade_schema(engine)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events),
            [
                {"id": f"e{n}", "webhook_id": f"e{n}", "received_at": NOW, "outcome": "applied"}
                | {"body": b"{}"}
                for n in range(30)
            ],
        )
        await connection.execute(
            sa.insert(deliveries),
            [
                {
                    "event_id": f"e{n}",
                    "destination": DESTINATIONS[n % 3],
                    "state": STATES[n // 3 % 3],
                    "next_attempt_at": NOW,
                    "created_at": NOW,
                }
                for n in range(30)
            ],
        )
    yield engine
    await engine.dispose()


async def every_page(engine: AsyncEngine, which: DeliveryFilter) -> list[tuple[int, str]]:
    listed: list[tuple[int, str]] = []
    cursor = None
    async with engine.connect() as connection:
        while True:
            page = await list_deliveries(connection, which, CONFIGURED, 4, cursor)
            listed += [(row["id"], row["state"]) for row in page.items]
            if page.next_cursor is None:
                return listed
            cursor = page.next_cursor


@pytest.mark.parametrize(
    "which",
    [
        DeliveryFilter(state=state, destination=to)
        for state in (None, *STATES, "orphaned")
        for to in (None, *DESTINATIONS)
    ],
    ids=repr,
)
async def test_few_or_many_the_same_deliveries_newest_first(
    engine: AsyncEngine, which: DeliveryFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = await every_page(engine, which)
    monkeypatch.setattr(queries, "SORTED_AT_MOST", 2)
    many = await every_page(engine, which)
    assert many == few
    assert [row_id for row_id, _ in few] == sorted((row_id for row_id, _ in few), reverse=True)
    async with engine.connect() as connection:
        query = sa.select(deliveries.c.id, deliveries.c.state, deliveries.c.destination)
        rows = (await connection.execute(query)).all()
    expected = {
        row_id
        for row_id, state, to in rows
        if which.destination in (None, to)
        and (
            which.state is None
            or (which.state == "orphaned" and state == "pending" and to not in CONFIGURED)
            or (which.state == state and (state != "pending" or to in CONFIGURED))
        )
    }
    assert {row_id for row_id, _ in few} == expected
