"""What operators do to stored data, shared by the CLI, the admin API and the console:
reprocess, prune, register (replays are in `replays`).

Each action that changes data writes one `audit` log line: who asked ("cli",
"admin-api" or "console"), what, and how many rows it touched.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.destinations import Destination
from receiver.exceptions import (
    InvalidRequestError,
    NotFoundError,
    ReceiverError,
    StoppedPartWayError,
)
from receiver.generations import MAX_ID_CHARS
from receiver.ingest.envelope import parse_event
from receiver.logs import log
from receiver.operators.nouns import counted
from receiver.services import Services
from receiver.store.database import transaction
from receiver.store.events import Reprocessed, reprocess_event
from receiver.store.filters import EventFilter, matching_event_ids
from receiver.store.records import MAX_REFERENCE_CHARS, register_task
from receiver.store.retention import Pruned, prune

# Large replays and reprocessing go in chunks: one transaction each, and progress to show.
CHUNK = 500


Progress = Callable[[int], None]


def no_progress(_: int) -> None:
    pass


async def matching_ids(engine: AsyncEngine, which: EventFilter) -> list[str]:
    async with transaction(engine) as connection:
        return list(await connection.scalars(matching_event_ids(which)))


@dataclass(frozen=True, slots=True)
class ReprocessCounts:
    """What a reprocess did: how many events ended in each outcome, how many of them
    changed outcome (the rest read as they did), and how many retention removed after they
    were chosen (`gone`: not reprocessed)."""

    outcomes: dict[str, int]
    changed: int
    gone: int = 0

    @property
    def reprocessed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def unchanged(self) -> int:
        return self.reprocessed - self.changed

    def as_json(self) -> dict[str, Any]:
        return {
            "reprocessed": self.reprocessed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "gone": self.gone,
            "outcomes": self.outcomes,
        }

    def __str__(self) -> str:
        """In words: reprocessed 12 events: 3 changed outcome, 9 unchanged (and 1 gone)."""
        gone = f", {self.gone:,} removed by retention meanwhile" if self.gone else ""
        return (
            f"reprocessed {counted(self.reprocessed, 'event')}: "
            f"{self.changed:,} changed outcome, {self.unchanged:,} unchanged{gone}"
        )


async def reprocess(
    engine: AsyncEngine,
    event_ids: list[str],
    who: str,
    destinations: Sequence[Destination],
    progress: Progress = no_progress,
) -> ReprocessCounts:
    """Re-parse and re-apply each event, queueing it for each of `destinations` that wants
    it now and was not sent it before; how many ended in each outcome, how many changed.
    An event retention removed since it was chosen is counted `gone` and skipped (the
    callers answer 404 before this for an ID the operator named that is not stored). Chunk
    by chunk, each its own transaction: a failure part-way says what the chunks before it
    did, and the audit line counts them."""
    outcomes: Counter[str] = Counter()
    changed = gone = 0

    def so_far() -> ReprocessCounts:
        return ReprocessCounts(dict(sorted(outcomes.items())), changed, gone)

    try:
        for start in range(0, len(event_ids), CHUNK):
            chunk = event_ids[start : start + CHUNK]
            async with transaction(engine) as connection:
                done = [
                    await _reprocessed(connection, event_id, destinations) for event_id in chunk
                ]
            for reprocessed in done:
                if reprocessed is None:
                    gone += 1
                else:
                    outcomes[reprocessed.outcome.value] += 1
                    changed += reprocessed.changed
            progress(len(chunk))
    except Exception as exc:
        raise StoppedPartWayError(
            f"The reprocess stopped part-way ({why_stopped(exc)}): {so_far()} before it."
        ) from exc
    finally:
        counts = so_far()
        log.info(
            "audit",
            who=who,
            what="reprocess",
            count=counts.reprocessed,
            changed=counts.changed,
            unchanged=counts.unchanged,
            gone=counts.gone,
        )
    return counts


async def _reprocessed(
    connection: AsyncConnection, event_id: str, destinations: Sequence[Destination]
) -> Reprocessed | None:
    """One event reprocessed, or None if it is no longer stored (nothing was written)."""
    try:
        return await connection.run_sync(
            reprocess_event, event_id, datetime.now(UTC), parse_event, destinations
        )
    except NotFoundError:
        return None


def why_stopped(exc: Exception) -> str:
    """A failure in words for the operator: our own error's message, or that it was not one."""
    return (
        str(exc)
        if isinstance(exc, ReceiverError)
        else f"an unforeseen failure, {type(exc).__name__}"
    )


async def reprocess_served(services: Services, which: EventFilter, who: str) -> ReprocessCounts:
    """A reprocess asked of a running service (the admin API, the console): every event
    `which` matches; each event named by ID must exist. Wakes this process's forwarder."""
    event_ids = await matching_ids(services.engine, which)
    missing = sorted(set(which.event_ids or ()) - set(event_ids))
    if missing:
        raise NotFoundError(f"no event {missing[0]!r}")
    counts = await reprocess(services.engine, event_ids, who, services.settings.forwarding)
    if services.forwarder is not None:
        services.forwarder.wake()
    return counts


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
