"""What operators do to stored data, shared by the CLI and the admin API.

Each action that changes data writes one `audit` log line: who asked ("cli" or
"admin-api"), what, and how many rows it touched.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import EVERY_OUTCOME, Destination, find_destination
from receiver.exceptions import ForwardingDisabledError, InvalidRequestError, NotFoundError
from receiver.generations import MAX_ID_CHARS
from receiver.ingest.envelope import parse_event
from receiver.logs import log
from receiver.operators.nouns import COUNT_LIMIT, capped, counted
from receiver.services import Services
from receiver.settings import Settings
from receiver.store.database import transaction
from receiver.store.deliveries import replay_events
from receiver.store.events import reprocess_event
from receiver.store.filters import EventFilter, matching_event_ids
from receiver.store.queries import count_replay
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
    return [_whatever_its_filters(find_destination(settings.forwarding, name))]


def _whatever_its_filters(destination: Destination) -> Destination:
    return replace(destination, event_types=None, outcomes=EVERY_OUTCOME)


# What a replay sends one destination: the events `which` matches (those it wants, by its
# filters, unless it was named or a delivery state chose them).
Leg = tuple[Destination, EventFilter]


def plan_replay(
    settings: Settings, which: EventFilter, name: str | None, target_url: str | None = None
) -> list[Leg]:
    """Where a replay goes, and what each destination is sent. With a delivery state, each
    destination (the one named, or every one) is sent the events whose latest delivery to
    it is in that state, whatever its filters: they were sent there before. So a replay of
    dead letters goes only where they died, never to a destination that has them."""
    destinations = replay_destinations(settings, name, target_url)
    if which.delivery_state is None:
        return [(destination, which) for destination in destinations]
    return [
        (_whatever_its_filters(destination), replace(which, destination=destination.name))
        for destination in destinations
    ]


@dataclass(frozen=True, slots=True)
class Replayed:
    """Deliveries a replay queued, or in a dry run would queue, by destination (those with
    none left out). A dry run counts each destination's no further than COUNT_LIMIT:
    COUNT_LIMIT + 1 reads "more than COUNT_LIMIT". A real run's counts are exact."""

    by_destination: dict[str, int]
    dry_run: bool = False

    @property
    def deliveries(self) -> int:
        return sum(self.by_destination.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deliveries": self.deliveries,
            "by_destination": self.by_destination,
        }

    def __str__(self) -> str:
        """In words: 4 deliveries: analytics 3, billing 1 (or 0 deliveries)."""
        number = capped if self.dry_run else "{:,}".format
        shown = ", ".join(f"{name} {number(n)}" for name, n in self.by_destination.items())
        head = counted(self.deliveries, "delivery", "deliveries")
        if self.dry_run and any(n > COUNT_LIMIT for n in self.by_destination.values()):
            total = sum(min(n, COUNT_LIMIT) for n in self.by_destination.values())
            head = f"more than {total:,} deliveries"
        return f"{head}: {shown}" if shown else head


async def count_planned(engine: AsyncEngine, plan: Sequence[Leg]) -> Replayed:
    """What `plan` would queue, changing nothing."""
    planned: dict[str, int] = {}
    async with transaction(engine) as connection:
        for destination, which in plan:
            if n := await count_replay(connection, which, destination, COUNT_LIMIT):
                planned[destination.name] = n
    return Replayed(planned, dry_run=True)


async def resolve_plan(
    engine: AsyncEngine, plan: Sequence[Leg]
) -> list[tuple[Destination, list[str]]]:
    """Each leg's matching event IDs, read before anything is queued: queueing changes the
    delivery states a leg may be chosen by."""
    return [(destination, await matching_ids(engine, which)) for destination, which in plan]


async def replay(
    engine: AsyncEngine,
    legs: Sequence[tuple[Destination, list[str]]],
    who: str,
    target_url: str | None = None,
    progress: Progress = _no_progress,
) -> Replayed:
    """Queue a new delivery of each leg's events (same webhook-id) to its destination, if
    its filters pass them; what was queued, by destination."""
    queued: Counter[str] = Counter()
    for destination, event_ids in legs:
        for start in range(0, len(event_ids), CHUNK):
            chunk = EventFilter(event_ids=tuple(event_ids[start : start + CHUNK]))
            async with transaction(engine) as connection:
                queued.update(
                    await replay_events(
                        connection, chunk, datetime.now(UTC), [destination], target_url
                    )
                )
            progress(len(chunk.event_ids or ()))
    replayed = Replayed({d.name: queued[d.name] for d, _ in legs if queued[d.name]})
    log.info(
        "audit",
        who=who,
        what="replay",
        count=replayed.deliveries,
        by_destination=replayed.by_destination,
    )
    return replayed


async def replay_served(
    services: Services, which: EventFilter, destination: str | None, who: str, dry_run: bool = False
) -> Replayed:
    """A replay asked of a running service (the admin API, the console): see `plan_replay`;
    an event named by ID must exist. Wakes this process's forwarder."""
    plan = plan_replay(services.settings, which, destination)
    if which.event_ids and not await matching_ids(services.engine, which):
        raise NotFoundError(f"no event {which.event_ids[0]!r}")
    if dry_run:
        return await count_planned(services.engine, plan)
    replayed = await replay(services.engine, await resolve_plan(services.engine, plan), who)
    if services.forwarder is not None:
        services.forwarder.wake()
    return replayed


@dataclass(frozen=True, slots=True)
class ReprocessCounts:
    """What a reprocess did: how many events ended in each outcome, and how many of them
    changed outcome (the rest read as they did)."""

    outcomes: dict[str, int]
    changed: int

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
            "outcomes": self.outcomes,
        }

    def __str__(self) -> str:
        """In words: reprocessed 12 events: 3 changed outcome, 9 unchanged."""
        return (
            f"reprocessed {counted(self.reprocessed, 'event')}: "
            f"{self.changed:,} changed outcome, {self.unchanged:,} unchanged"
        )


async def reprocess(
    engine: AsyncEngine,
    event_ids: list[str],
    who: str,
    destinations: Sequence[Destination],
    progress: Progress = _no_progress,
) -> ReprocessCounts:
    """Re-parse and re-apply each event, queueing it for each of `destinations` that wants
    it now and was not sent it before; how many ended in each outcome, how many changed."""
    outcomes: Counter[str] = Counter()
    changed = 0
    for start in range(0, len(event_ids), CHUNK):
        chunk = event_ids[start : start + CHUNK]
        async with transaction(engine) as connection:
            for event_id in chunk:
                done = await connection.run_sync(
                    reprocess_event, event_id, datetime.now(UTC), parse_event, destinations
                )
                outcomes[done.outcome.value] += 1
                changed += done.changed
        progress(len(chunk))
    counts = ReprocessCounts(dict(sorted(outcomes.items())), changed)
    log.info(
        "audit",
        who=who,
        what="reprocess",
        count=counts.reprocessed,
        changed=counts.changed,
        unchanged=counts.unchanged,
    )
    return counts


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
