"""Replays, shared by the CLI, the admin API and the console: where a replay goes (`plan_replay`),
what it would queue (`count_planned`, a dry run), and queueing it (`replay`), with the
`audit` line each real replay writes."""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.destinations import Destination, find_destination
from receiver.exceptions import (
    ForwardingDisabledError,
    InvalidRequestError,
    NotFoundError,
    StoppedPartWayError,
)
from receiver.logs import log
from receiver.operators.actions import CHUNK, Progress, matching_ids, no_progress, why_stopped
from receiver.operators.nouns import COUNT_LIMIT, capped, counted
from receiver.services import Services
from receiver.settings import Settings
from receiver.store.database import transaction
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.replays import (
    claim_dead_letters,
    count_dead_letters,
    count_replay,
    dead_letters,
    events_to_replay,
    replay_events,
)
from receiver.tracing.carriers import carrier_of

# The delivery states a replay chooses by: replayed and recovered are history, and no
# pair's latest delivery (one of those was followed by another).
ReplayState = Literal["pending", "delivered", "dead"]
REPLAY_STATES: tuple[str, ...] = get_args(ReplayState)


def replay_destinations(
    settings: Settings, name: str | None, target_url: str | None
) -> Sequence[Destination]:
    """Where a replay goes: the destination named (sent whatever its filters, see `Leg`);
    else every destination, each by its filters. A replay to another URL is signed as one
    destination, so it must be named when there are several."""
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
    return [find_destination(settings.forwarding, name)]


@dataclass(frozen=True, slots=True)
class Leg:
    """What a replay sends one destination: the events `which` matches, to `target_url` if
    given. Those it wants, by its filters, if `filtered`; named, every one (but the
    service's own only where it names them or the replay asks for them by type or ID); by a
    delivery state, every one in that state there (see `store.replays.replay_conditions`).
    A leg of dead letters (`claims`) replays the destination's own: each dead letter
    `which` matches is claimed and sent again to its own target URL."""

    destination: Destination
    which: EventFilter
    target_url: str | None = None
    filtered: bool = True

    @property
    def claims(self) -> bool:
        # A replay to another URL is a copy sent elsewhere: it replays no dead letter.
        return self.which.delivery_state == DeliveryState.DEAD and self.target_url is None


def plan_replay(
    settings: Settings, which: EventFilter, name: str | None, target_url: str | None = None
) -> list[Leg]:
    """Where a replay goes, and what each destination is sent. With a delivery state, each
    destination (the one named, or every one) is sent the events in that state there,
    whatever its filters: they were sent there before. So a replay of dead letters goes only
    where they died, never to a destination that has them."""
    destinations = replay_destinations(settings, name, target_url)
    filtered = which.delivery_state is None and name is None and target_url is None
    return [
        Leg(
            destination,
            which if which.delivery_state is None else replace(which, destination=destination.name),
            target_url,
            filtered,
        )
        for destination in destinations
    ]


@dataclass(frozen=True, slots=True)
class Replayed:
    """Deliveries a replay queued, or in a dry run would queue, by destination (those with
    none left out). A dry run counts each destination's no further than COUNT_LIMIT:
    COUNT_LIMIT + 1 reads "more than COUNT_LIMIT". A real run's counts are exact. A dry run
    of dead letters also says the largest it counted (`up_to`) and when it counted
    (`dead_by`): a confirmation replays those up to the one and dead by the other."""

    by_destination: dict[str, int]
    dry_run: bool = False
    up_to: int | None = None
    dead_by: datetime | None = None

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> "Replayed":
        """What a real run queued (or will queue), from counts by destination."""
        return cls({name: n for name, n in counts.items() if n})

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
    """What `plan` would queue, changing nothing. Dead letters are counted as dead by now,
    as their confirmation claims them (`Replayed.dead_by`)."""
    planned: dict[str, int] = {}
    largest: list[int] = []
    counted_at = datetime.now(UTC)
    claims = False
    async with transaction(engine) as connection:
        for leg in plan:
            name = leg.destination.name
            if leg.claims:
                claims = True
                which = replace(leg.which, dead_by=counted_at)
                n, up_to = await count_dead_letters(connection, which, name, COUNT_LIMIT)
                largest += [up_to] if up_to is not None else []
            else:
                n = await count_replay(
                    connection, leg.which, leg.destination, leg.filtered, COUNT_LIMIT
                )
            if n:
                planned[name] = n
    return Replayed(
        planned,
        dry_run=True,
        up_to=max(largest, default=None),
        dead_by=counted_at if claims else None,
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """A leg's work, read before anything is queued (queueing changes the delivery states a
    leg is chosen by): the events it copies, or the dead letters it claims."""

    leg: Leg
    event_ids: list[str]
    dead_letters: list[int]

    def __len__(self) -> int:
        return len(self.dead_letters) if self.leg.claims else len(self.event_ids)


async def resolve_plan(engine: AsyncEngine, plan: Sequence[Leg]) -> list[Resolved]:
    """Each leg's events or dead letters, exactly: what a replay of them queues at most (a
    dead letter another replay claims first is not queued twice)."""
    resolved = []
    async with transaction(engine) as connection:
        for leg in plan:
            if leg.claims:
                letters = dead_letters(leg.which, leg.destination.name)
                resolved.append(Resolved(leg, [], list(await connection.scalars(letters))))
            else:
                chosen = events_to_replay(leg.which, leg.destination, leg.filtered)
                resolved.append(Resolved(leg, list(await connection.scalars(chosen)), []))
    return resolved


def resolved_counts(resolved: Sequence[Resolved]) -> Replayed:
    """What `resolved` would queue, exactly, by destination: what to ask before it."""
    by_destination: Counter[str] = Counter()
    for work in resolved:
        by_destination[work.leg.destination.name] += len(work)
    return Replayed.of(by_destination)


async def replay(
    engine: AsyncEngine, resolved: Sequence[Resolved], who: str, progress: Progress = no_progress
) -> Replayed:
    """Queue a new delivery of each leg's events (same webhook-id) to its destination, if
    its filters pass them, or replay its dead letters; what was queued, by destination.
    Chunk by chunk, each its own transaction: a failure part-way leaves the chunks before
    it queued, and says how many (the audit line counts them too)."""
    queued: Counter[str] = Counter()
    # One replay, one trace: its deliveries' attempts are children of the current span (the
    # request or command that asked), linked to each event's first trace. Asked untraced,
    # "" marks them as a replay's all the same: each attempt then starts a trace of its own.
    carrier = carrier_of(trace.get_current_span())
    traceparent = carrier.traceparent if carrier else ""
    try:
        for work in resolved:
            name = work.leg.destination.name
            for start in range(0, len(work), CHUNK):
                async with transaction(engine) as connection:
                    queued[name] += await _queue_chunk(connection, work, start, traceparent)
                progress(min(CHUNK, len(work) - start))
    except Exception as exc:
        done = Replayed.of(queued)
        raise StoppedPartWayError(
            f"The replay stopped part-way ({why_stopped(exc)}): {done} queued before it."
        ) from exc
    finally:
        log.info(
            "audit",
            who=who,
            what="replay",
            count=sum(queued.values()),
            by_destination=Replayed.of(queued).by_destination,
        )
    return Replayed.of(queued)


async def _queue_chunk(
    connection: AsyncConnection, work: Resolved, start: int, traceparent: str
) -> int:
    leg, now = work.leg, datetime.now(UTC)
    if leg.claims:
        chunk = work.dead_letters[start : start + CHUNK]
        return await claim_dead_letters(connection, chunk, leg.destination.name, now, traceparent)
    which = EventFilter(event_ids=tuple(work.event_ids[start : start + CHUNK]))
    queued = await replay_events(
        connection, which, now, [leg.destination], leg.target_url, traceparent, leg.filtered
    )
    return queued.get(leg.destination.name, 0)


async def replay_dead_letter(services: Services, name: str, delivery_id: int, who: str) -> Replayed:
    """One dead letter of destination `name` replayed (the console's per-row button),
    claimed as any dead-letter replay claims it: 0 if it is not, or no longer, dead."""
    (leg,) = plan_replay(services.settings, EventFilter(delivery_state=DeliveryState.DEAD), name)
    replayed = await replay(services.engine, [Resolved(leg, [], [delivery_id])], who)
    if services.forwarder is not None:
        services.forwarder.wake()
    return replayed


async def replay_served(
    services: Services,
    which: EventFilter,
    destination: str | None,
    who: str,
    dry_run: bool = False,
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
