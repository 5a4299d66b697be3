"""What operators do to stored data, shared by the CLI and the admin API.

Each action that changes data writes one `audit` log line: who asked ("cli" or
"admin-api"), what, and how many rows it touched.
"""

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.ingest.envelope import parse_event
from receiver.logs import log
from receiver.store.database import transaction
from receiver.store.deliveries import replay_events
from receiver.store.events import reprocess_event
from receiver.store.filters import EventFilter, matching_event_ids
from receiver.store.retention import Pruned, prune

# Large replays and reprocessing go in chunks: one transaction each, and progress to show.
CHUNK = 500


Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


async def matching_ids(engine: AsyncEngine, which: EventFilter) -> list[str]:
    async with transaction(engine) as connection:
        return list(await connection.scalars(matching_event_ids(which)))


async def replay(
    engine: AsyncEngine,
    event_ids: list[str],
    who: str,
    target_url: str | None = None,
    progress: Progress = _no_progress,
) -> int:
    """Queue a new delivery of each event (same webhook-id); how many were queued."""
    replayed = 0
    for start in range(0, len(event_ids), CHUNK):
        chunk = EventFilter(event_ids=tuple(event_ids[start : start + CHUNK]))
        async with transaction(engine) as connection:
            replayed += await replay_events(connection, chunk, datetime.now(UTC), target_url)
        progress(len(chunk.event_ids or ()))
    log.info("audit", who=who, what="replay", count=replayed)
    return replayed


async def reprocess(
    engine: AsyncEngine, event_ids: list[str], who: str, progress: Progress = _no_progress
) -> Counter[str]:
    """Re-parse and re-apply each event; how many ended in each outcome."""
    outcomes: Counter[str] = Counter()
    for start in range(0, len(event_ids), CHUNK):
        chunk = event_ids[start : start + CHUNK]
        async with transaction(engine) as connection:
            for event_id in chunk:
                outcome = await connection.run_sync(
                    reprocess_event, event_id, datetime.now(UTC), parse_event
                )
                outcomes[outcome.value] += 1
        progress(len(chunk))
    log.info("audit", who=who, what="reprocess", count=sum(outcomes.values()))
    return outcomes


async def prune_older_than(engine: AsyncEngine, older_than: datetime, who: str) -> Pruned:
    pruned = await prune(engine, older_than)
    log.info("audit", who=who, what="prune", count=pruned.events)
    return pruned
