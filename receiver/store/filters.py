"""Which events an operator means: one filter for listing, counting, replaying, reprocessing.

Every filter is answered from an index, whatever the values: the common type and outcome
walk `received_at` (their rows are most rows, so a page fills at once), the others read the
partial indexes that hold only them (tables.py), and a delivery state starts from the
deliveries in that state.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from receiver.store.tables import COMMON_OUTCOME, COMMON_TYPE, deliveries, events


@dataclass(frozen=True, slots=True)
class EventFilter:
    event_ids: tuple[str, ...] | None = None
    type: str | None = None
    since: datetime | None = None  # on received_at, inclusive
    until: datetime | None = None  # on received_at, exclusive
    outcome: str | None = None
    delivery_state: str | None = None  # of the event's latest delivery (to `destination`)
    destination: str | None = None


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
        conditions.append(
            events.c.id.in_(_latest_in_state(which.delivery_state, which.destination))
        )
    return conditions


def _latest_in_state(state: str, destination: str | None) -> sa.Select[tuple[str]]:
    """Events whose latest delivery (to `destination`, if given) is in `state`: from the
    deliveries in that state, those with no later one. Asking each event for its latest
    delivery instead read every event (0.46 s of a million to count the dead, measured;
    0.12 s this way)."""
    later = deliveries.alias("later")
    candidate = [deliveries.c.destination == destination] if destination else []
    same_to = [later.c.destination == destination] if destination else []
    newer = sa.exists().where(
        later.c.event_id == deliveries.c.event_id, later.c.id > deliveries.c.id, *same_to
    )
    return sa.select(deliveries.c.event_id).where(deliveries.c.state == state, *candidate, ~newer)


def matching_event_ids(which: EventFilter) -> sa.Select[tuple[str]]:
    return sa.select(events.c.id).where(*event_conditions(which)).order_by(events.c.received_at)


def count_matching_events(which: EventFilter) -> sa.Select[int]:
    return sa.select(sa.func.count()).select_from(events).where(*event_conditions(which))
