"""Which events an operator means: one filter for listing, counting, replaying, reprocessing."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from receiver.store.tables import deliveries, events


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
    if which.since is not None:
        conditions.append(events.c.received_at >= which.since)
    if which.until is not None:
        conditions.append(events.c.received_at < which.until)
    if which.outcome is not None:
        conditions.append(events.c.outcome == which.outcome)
    if which.delivery_state is not None:
        to = [deliveries.c.destination == which.destination] if which.destination else []
        latest = (
            sa.select(deliveries.c.state)
            .where(deliveries.c.event_id == events.c.id, *to)
            .order_by(deliveries.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        conditions.append(latest == which.delivery_state)
    return conditions


def matching_event_ids(which: EventFilter) -> sa.Select[tuple[str]]:
    return sa.select(events.c.id).where(*event_conditions(which)).order_by(events.c.received_at)
