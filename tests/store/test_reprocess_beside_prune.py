"""Reprocessing an old event while scheduled retention prunes it, on a real database of each
backend, the reprocess driven into the window between prune's choice and its deletes."""

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.exceptions import NotFoundError, StoreUnavailableError
from receiver.ingest.envelope import parse_event
from receiver.store.database import create_engine, transaction
from receiver.store.events import reprocess_event
from receiver.store.retention import prune
from receiver.store.tables import deliveries, events
from tests.helpers import destination, make_event
from tests.store.test_retention import CUTOFF, OLD, WINDOW_SECONDS, add_events, engine, rows

__all__ = ["engine"]  # the fixture, shared with test_retention
pytestmark = pytest.mark.anyio


async def test_a_reprocess_tried_while_prune_runs_keeps_the_event_or_finds_it_gone(
    engine: AsyncEngine,
) -> None:
    """An old event quarantined by an older parser, reprocessed (now applied, so queued for
    the destination that wants applied events) between prune's choice of it and its deletes:
    either the reprocess commits and the event stays with its pending delivery, or it finds
    the event gone (404; on SQLite it may first be told to retry, 503). It never fails on the
    new delivery's foreign key (a 500), and nothing it committed is deleted."""
    event = make_event()
    event_id = event["id"]
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(events).values(
                id=event_id,
                webhook_id=event_id,
                received_at=OLD,
                outcome="quarantined",
                quarantine_reason="missing_generation",
                body=orjson.dumps(event),
            )
        )
    await add_events(engine, 3, "other")
    url = engine.url.render_as_string(hide_password=False)
    outcome: dict[str, Any] = {}

    def reprocess() -> None:
        async def run() -> None:
            reprocessing = create_engine(url, 10)
            try:
                async with transaction(reprocessing) as connection:
                    outcome["applied"] = await connection.run_sync(
                        reprocess_event, event_id, datetime.now(UTC), parse_event, [destination()]
                    )
            except Exception as exc:  # noqa: BLE001 - what it was is the test's finding
                outcome["error"] = exc
            finally:
                await reprocessing.dispose()

        asyncio.run(run())

    reprocessing = threading.Thread(target=reprocess)

    def between_choice_and_deletes(*args: Any) -> None:
        statement: str = args[2]
        if statement.lstrip().upper().startswith("DELETE") and reprocessing.ident is None:
            reprocessing.start()
            reprocessing.join(WINDOW_SECONDS)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", between_choice_and_deletes)
    pruned = await prune(engine, CUTOFF)
    reprocessing.join()
    kept = await rows(
        engine, sa.select(deliveries.c.state).where(deliveries.c.event_id == event_id)
    )
    if "error" in outcome:
        assert isinstance(outcome["error"], NotFoundError | StoreUnavailableError), outcome
        assert kept == []
        assert pruned.events == 4
    else:
        assert kept == [("pending",)]
        assert pruned.events == 3
