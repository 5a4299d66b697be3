"""What operators do to stored data, shared by the CLI and the admin API.

Each action that changes data writes one `audit` log line: who asked ("cli" or
"admin-api"), what, and how many rows it touched.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import EVERY_OUTCOME, Destination
from receiver.exceptions import ForwardingDisabledError, InvalidRequestError, NotFoundError
from receiver.generations import MAX_ID_CHARS
from receiver.ingest.envelope import parse_event
from receiver.logs import log
from receiver.services import Services
from receiver.settings import Settings
from receiver.store.database import transaction
from receiver.store.deliveries import replay_events
from receiver.store.events import reprocess_event
from receiver.store.filters import EventFilter, matching_event_ids
from receiver.store.records import MAX_REFERENCE_CHARS, register_task
from receiver.store.retention import Pruned, prune

# Large replays and reprocessing go in chunks: one transaction each, and progress to show.
CHUNK = 500


Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


async def matching_ids(engine: AsyncEngine, which: EventFilter) -> list[str]:
    async with transaction(engine) as connection:
        return list(await connection.scalars(matching_event_ids(which)))


def replay_destinations(
    settings: Settings, name: str | None, target_url: str | None
) -> Sequence[Destination]:
    """Where a replay goes: the destination named, whatever its filters; else every
    destination, each by its filters. A replay to another URL is signed as one destination,
    so it must be named when there are several."""
    if not settings.forwarding:
        raise ForwardingDisabledError(
            "forwarding is off: set RECEIVER_FORWARD_URL or RECEIVER_DESTINATIONS_FILE"
        )
    if name is None and target_url is None:
        return settings.forwarding
    if name is None:
        if len(settings.forwarding) > 1:
            raise InvalidRequestError(
                "destination: name the one whose secrets sign a replay to another URL"
            )
        name = settings.forwarding[0].name
    for destination in settings.forwarding:
        if destination.name == name:
            return [replace(destination, event_types=None, outcomes=EVERY_OUTCOME)]
    raise InvalidRequestError(f"destination: {name!r} is not configured")


async def replay(
    engine: AsyncEngine,
    event_ids: list[str],
    who: str,
    destinations: Sequence[Destination],
    target_url: str | None = None,
    progress: Progress = _no_progress,
) -> int:
    """Queue a new delivery of each event (same webhook-id) to each of `destinations` whose
    filters it passes; how many were queued."""
    replayed = 0
    for start in range(0, len(event_ids), CHUNK):
        chunk = EventFilter(event_ids=tuple(event_ids[start : start + CHUNK]))
        async with transaction(engine) as connection:
            replayed += await replay_events(
                connection, chunk, datetime.now(UTC), destinations, target_url
            )
        progress(len(chunk.event_ids or ()))
    log.info("audit", who=who, what="replay", count=replayed)
    return replayed


async def replay_served(
    services: Services, which: EventFilter, destination: str | None, who: str
) -> int:
    """A replay asked of a running service (the admin API, the console): what `which`
    matches, to `destination` or to each destination that wants it; an event named by ID
    must exist. Wakes this process's forwarder."""
    destinations = replay_destinations(services.settings, destination, None)
    event_ids = await matching_ids(services.engine, which)
    if which.event_ids and not event_ids:
        raise NotFoundError(f"no event {which.event_ids[0]!r}")
    replayed = await replay(services.engine, event_ids, who, destinations)
    if services.forwarder is not None:
        services.forwarder.wake()
    return replayed


async def reprocess(
    engine: AsyncEngine,
    event_ids: list[str],
    who: str,
    destinations: Sequence[Destination],
    progress: Progress = _no_progress,
) -> Counter[str]:
    """Re-parse and re-apply each event, queueing it for each of `destinations` that wants
    it now and was not sent it before; how many ended in each outcome."""
    outcomes: Counter[str] = Counter()
    for start in range(0, len(event_ids), CHUNK):
        chunk = event_ids[start : start + CHUNK]
        async with transaction(engine) as connection:
            for event_id in chunk:
                outcome = await connection.run_sync(
                    reprocess_event, event_id, datetime.now(UTC), parse_event, destinations
                )
                outcomes[outcome.value] += 1
        progress(len(chunk))
    log.info("audit", who=who, what="reprocess", count=sum(outcomes.values()))
    return outcomes


async def prune_older_than(engine: AsyncEngine, older_than: datetime, who: str) -> Pruned:
    # Counted chunk by chunk and audited even when a later chunk fails: what the chunks
    # before it committed is gone for good.
    removed: list[Pruned] = []
    try:
        await prune(engine, older_than, on_chunk=removed.append)
    finally:
        log.info("audit", who=who, what="prune", count=sum(removed, Pruned()).events)
    return sum(removed, Pruned())


async def register(
    engine: AsyncEngine, task_id: str, reference: str | None, who: str
) -> tuple[dict[str, Any], bool]:
    """The task's record, and whether it was created now (see `store.records`)."""
    if not 0 < len(task_id) <= MAX_ID_CHARS:
        raise InvalidRequestError(f"task_id: give 1 to {MAX_ID_CHARS} characters")
    if reference is not None and not 0 < len(reference) <= MAX_REFERENCE_CHARS:
        raise InvalidRequestError(f"reference: give 1 to {MAX_REFERENCE_CHARS} characters")
    async with transaction(engine) as connection:
        record, created = await register_task(connection, task_id, reference, datetime.now(UTC))
    log.info("audit", who=who, what="register", task_id=task_id, count=int(created))
    return record, created
