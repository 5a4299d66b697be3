"""The notifications table on each backend: the newest NOTIFICATIONS_KEPT rows kept, the
last ones listed newest first."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.store.database import transaction
from receiver.store.notifications import (
    NOTIFICATIONS_KEPT,
    last_notifications,
    record_notification,
)
from receiver.store.tables import notifications

pytestmark = pytest.mark.anyio

START = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


async def test_only_the_newest_rows_are_kept_and_listed_newest_first(engine: AsyncEngine) -> None:
    for n in range(NOTIFICATIONS_KEPT + 5):
        async with transaction(engine) as connection:
            await record_notification(
                connection,
                f"receiver:delivery.dead:{n}",
                "receiver.delivery.dead",
                f"Dead letters: d{n}",
                START + timedelta(seconds=n),
                delivered=1,
                failed=n % 2,
            )
    async with transaction(engine) as connection:
        kept = await connection.scalar(sa.select(sa.func.count()).select_from(notifications))
        last = await last_notifications(connection, 3)
        everything = await last_notifications(connection, 1000)
    assert kept == NOTIFICATIONS_KEPT
    assert [row["title"] for row in last] == [
        "Dead letters: d104",
        "Dead letters: d103",
        "Dead letters: d102",
    ]
    assert last[0] == {
        "event_id": "receiver:delivery.dead:104",
        "type": "receiver.delivery.dead",
        "title": "Dead letters: d104",
        "sent_at": (START + timedelta(seconds=104)).isoformat(),
        "delivered": 1,
        "failed": 0,
    }
    assert everything[-1]["title"] == "Dead letters: d5"


async def test_an_empty_table_lists_nothing(engine: AsyncEngine) -> None:
    async with transaction(engine) as connection:
        assert await last_notifications(connection, 10) == []
