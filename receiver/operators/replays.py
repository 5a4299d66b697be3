"""Replays, shared by the CLI, the admin API and the console: where a replay goes (`plan_replay`),
what it would queue (`count_planned`, a dry run), and queueing it (`replay`), with the
`audit` line each real replay writes."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import EVERY_OUTCOME, Destination, find_destination
from receiver.exceptions import ForwardingDisabledError, InvalidRequestError, NotFoundError
from receiver.logs import log
from receiver.operators.actions import CHUNK, Progress, matching_ids, no_progress
from receiver.operators.nouns import COUNT_LIMIT, capped, counted
from receiver.services import Services
from receiver.settings import Settings
from receiver.store.database import transaction
from receiver.store.filters import EventFilter
from receiver.store.replays import count_replay, replay_events


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
    progress: Progress = no_progress,
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
