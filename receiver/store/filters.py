"""Which events an operator means: one filter for listing, counting, replaying, reprocessing.

Every filter is answered from an index, whatever the values: the common type and outcome
walk `received_at` (their rows are most rows, so a page fills at once), the others read the
partial indexes that hold only them (tables.py), and a delivery state starts from the
deliveries in that state.
"""

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from receiver.store.deliveries import DeliveryState
from receiver.store.tables import COMMON_OUTCOME, COMMON_TYPE, deliveries, events

DEAD = DeliveryState.DEAD.value


@dataclass(frozen=True, slots=True)
class EventFilter:
    event_ids: tuple[str, ...] | None = None
    type: str | None = None
    since: datetime | None = None  # on received_at, inclusive
    until: datetime | None = None  # on received_at, exclusive
    outcome: str | None = None
    # Dead: the event has a dead letter (to `destination`), `state = 'dead'` as every figure
    # of dead letters reads it. Another state: the event's latest delivery (to `destination`).
    delivery_state: str | None = None
    destination: str | None = None
    # Dead letters with a delivery ID at most this: what a dry run counted (its largest).
    up_to: int | None = None
    # Dead letters that died at or before this instant: when a dry run counted. A delivery
    # created before the count and still retrying at it has an ID below `up_to`; if it dies
    # before the confirmation, this keeps it out of what was confirmed. A dead letter's
    # `finished_at` is when its outcome was written (by the forwarder's clock, in the
    # transaction that wrote it), so one whose last attempt was in flight across the count
    # is kept out too. With several processes it is compared across their clocks.
    dead_by: datetime | None = None


def event_conditions(which: EventFilter) -> list[Any]:
    conditions: list[Any] = []
    if which.event_ids is not None:
        conditions.append(events.c.id.in_(which.event_ids))
    if which.type is not None:
        conditions.append(events.c.type == which.type)
        if which.type != COMMON_TYPE:
            # Repeats the partial index's condition: a planner uses the index only then.
            conditions.append(events.c.type != COMMON_TYPE)
    if which.since is not None:
        conditions.append(events.c.received_at >= which.since)
    if which.until is not None:
        conditions.append(events.c.received_at < which.until)
    if which.outcome is not None:
        conditions.append(events.c.outcome == which.outcome)
        if which.outcome != COMMON_OUTCOME:
            conditions.append(events.c.outcome != COMMON_OUTCOME)
    if which.delivery_state is not None:
        conditions.append(events.c.id.in_(sa.select(deliveries.c.event_id).where(*_in(which))))
    return conditions


def _in(which: EventFilter) -> list[Any]:
    """Conditions on `deliveries`: those that put an event in `which.delivery_state`. Dead:
    a dead letter (to `destination`, `pinned` to a count). Another state: the event's
    latest delivery (`_latest_in`). Both start from the deliveries in that state: asking
    each event for its latest delivery instead read every event (0.46 s of a million to
    count the dead, measured; 0.12 s this way)."""
    state = which.delivery_state
    if state != DEAD:
        return _latest_in(str(state), which.destination)
    to = [deliveries.c.destination == which.destination] if which.destination else []
    return [deliveries.c.state == DEAD, *to, *pinned(which)]


def pinned(which: EventFilter) -> list[Any]:
    """Conditions on dead letters: those a dry run counted (`up_to`, `dead_by`). Each is a
    filter on rows the partial index of dead letters has already found."""
    up_to = [deliveries.c.id <= which.up_to] if which.up_to is not None else []
    dead_by = [deliveries.c.finished_at <= which.dead_by] if which.dead_by is not None else []
    return [*up_to, *dead_by]


def _latest_in(state: str, destination: str | None) -> list[Any]:
    """Conditions on `deliveries`: in `state` (and to `destination`), no later delivery of
    its event (to `destination`)."""
    later = deliveries.alias("later")
    candidate = [deliveries.c.destination == destination] if destination else []
    same_to = [later.c.destination == destination] if destination else []
    newer = sa.exists().where(
        later.c.event_id == deliveries.c.event_id, later.c.id > deliveries.c.id, *same_to
    )
    return [deliveries.c.state == state, *candidate, ~newer]


def matching_event_ids(which: EventFilter) -> sa.Select[tuple[str]]:
    return sa.select(events.c.id).where(*event_conditions(which)).order_by(events.c.received_at)


def count_matching_events(which: EventFilter, limit: int, from_events: bool) -> sa.Select[int]:
    """How many events `which` matches, counted no further than `limit` + 1: each match
    costs an index lookup or two. With a delivery state, the count walks either the events
    the other conditions keep, each asked whether its latest delivery is in that state
    (`from_events`), or the deliveries in that state: whichever `sides` found fewer."""
    if which.delivery_state is None:
        return _at_most(sa.select(events.c.id).where(*event_conditions(which)), limit)
    others = event_conditions(replace(which, delivery_state=None))
    if from_events and which.delivery_state == DEAD:
        kept = sa.select(events.c.id).where(
            *others, sa.exists().where(deliveries.c.event_id == events.c.id, *_in(which))
        )
        return _at_most(kept, limit)
    if from_events:
        to = [deliveries.c.destination == which.destination] if which.destination else []
        latest_state = (
            sa.select(deliveries.c.state)
            .where(deliveries.c.event_id == events.c.id, *to)
            .order_by(deliveries.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        kept = sa.select(events.c.id).where(*others, latest_state == which.delivery_state)
        return _at_most(kept, limit)
    # An event has one latest delivery (to `destination`), but may have a dead letter to
    # each destination (and target URL): those are counted once each.
    joined = deliveries.join(events, events.c.id == deliveries.c.event_id)
    found = sa.select(events.c.id).select_from(joined).where(*others, *_in(which))
    return _at_most(found.distinct() if which.delivery_state == DEAD else found, limit)


# How far `sides` counts each side: an index range each, a few ms per 100,000 entries
# (measured), and enough to tell a day of a million events (33,000) from 100,000 dead letters.
SIDE_LIMIT = 100_000


def sides(which: EventFilter) -> tuple[sa.Select[int], sa.Select[int]] | None:
    """For a delivery state with other conditions: how many events those conditions keep,
    and how many deliveries are in that state, each counted no further than SIDE_LIMIT + 1,
    for count_matching_events to start from the fewer (`make bench`: a day of events and
    100,000 dead letters, a month and a thousand pending deliveries). None when only the
    state narrows."""
    if which.delivery_state is None:
        return None
    others = event_conditions(replace(which, delivery_state=None, destination=None))
    if not others:
        return None
    to = [deliveries.c.destination == which.destination] if which.destination else []
    in_state = sa.select(deliveries.c.id).where(deliveries.c.state == which.delivery_state, *to)
    kept = sa.select(events.c.id).where(*others)
    return _at_most(kept, SIDE_LIMIT), _at_most(in_state, SIDE_LIMIT)


def _at_most(query: sa.Select[tuple[str]] | sa.Select[tuple[int]], limit: int) -> sa.Select[int]:
    return sa.select(sa.func.count()).select_from(query.limit(limit + 1).subquery())
