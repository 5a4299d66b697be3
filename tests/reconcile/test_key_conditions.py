"""The API key's condition as reconciliation raises and ends it (receiver/reconcile/
reconciler.py, receiver/operational/alerts.py): passes run in-process against the fake
Rivya API, with the operational checks on a real database of each backend."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.operational.alerts import Alerts
from receiver.operational.events import OperationalEvent, OperationalType
from receiver.reconcile.reconciler import Reconciler
from receiver.settings import Settings
from receiver.store.tables import events, records
from tests.fake_rivya import FakeRivya, error
from tests.reconcile.conftest import reconciling

pytestmark = pytest.mark.anyio

# Passes that each flapped refused/restored before the fix.
PASSES = 4
KEY_EVENTS = (OperationalType.RECONCILE_REFUSED, OperationalType.RECONCILE_RESTORED)


async def stale_record(engine: AsyncEngine, task_id: str) -> None:
    """A record still processing, unchanged for a day: due in every pass."""
    long_ago = datetime.now(UTC) - timedelta(days=1)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(records).values(
                task_id=task_id, status="processing", result_urls=[], changed_at=long_ago
            )
        )


async def stored_key_events(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        found = await connection.scalars(
            sa.select(events.c.type)
            .where(events.c.type.in_([t.value for t in KEY_EVENTS]))
            .order_by(events.c.received_at)
        )
        return list(found)


async def test_a_key_refused_generations_but_not_the_balance_is_refused_once_not_each_pass(
    engine: AsyncEngine, fake_rivya: FakeRivya, new_secrets: Callable[[], str]
) -> None:
    """Rivya answers the balance, then 403 `api_scope_denied` for a stale record's
    generation, pass after pass: `receiver.reconcile.refused` is raised (stored and told)
    once, and no `receiver.reconcile.restored`, since no pass got through. Once the key is
    allowed generations again, one whole pass restores it, once."""
    await stale_record(engine, "task_1")
    fake_rivya.answers["task_1"] = error(403, "api_scope_denied")
    settings = Settings(signing_secrets=new_secrets(), **reconciling(fake_rivya))
    told: list[OperationalEvent] = []
    alerts = Alerts(engine, settings, notify=told.append)
    async with Reconciler(engine, settings, alerts=alerts) as reconciler:
        for _ in range(PASSES):
            report = await reconciler.run_pass("test")
            assert (report.result, report.error_code) == ("auth_failed", "api_scope_denied")
        assert len(fake_rivya.calls_to("/api/v1/generations/")) == PASSES
        assert [event.type for event in told] == [OperationalType.RECONCILE_REFUSED]
        assert told[0].data["code"] == "api_scope_denied"
        assert await stored_key_events(engine) == [OperationalType.RECONCILE_REFUSED]

        del fake_rivya.answers["task_1"]  # Rivya no longer knows it: a whole pass.
        for _ in range(2):
            assert (await reconciler.run_pass("test")).result == "ok"
    assert [event.type for event in told] == list(KEY_EVENTS)
    assert await stored_key_events(engine) == list(KEY_EVENTS)
