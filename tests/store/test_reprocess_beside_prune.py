"""Reprocessing an old event while scheduled retention prunes it, on a real database of each
backend, the reprocess driven into the window between prune's choice and its deletes."""

from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.exceptions import NotFoundError, StoreUnavailableError
from receiver.ingest.envelope import parse_event
from receiver.store.database import transaction
from receiver.store.events import Reprocessed, reprocess_event
from receiver.store.tables import deliveries, events
from tests.helpers import destination, make_event
from tests.store.test_retention import OLD, add_events, prune_beside, rows

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

    async def reprocess(reprocessing: AsyncEngine) -> Reprocessed:
        async with transaction(reprocessing) as connection:
            return await connection.run_sync(
                reprocess_event, event_id, datetime.now(UTC), parse_event, [destination()]
            )

    pruned, outcome = await prune_beside(engine, reprocess)
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
