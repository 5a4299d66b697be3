"""Each destination's health, for operators and /metrics: its deliveries by state, the age
of its oldest pending one, and its last success, last failure and failures since.

A pending delivery whose destination is not configured here is counted `orphaned`, not
`pending`: nothing will send it until the destination is back, and it is not a backlog that
a forwarder is falling behind on. One whose destination is disabled is counted `disabled`,
for the same reason: nothing sends it until the destination is enabled.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.destinations import Destination, find_destination, shown_url
from receiver.store.deliveries import DISABLED, ORPHANED, DeliveryState, shown_state
from receiver.store.destination_states import Disabled, disabled_destinations_in
from receiver.store.tables import attempts, deliveries, destination_health

COUNTED = (*(state.value for state in DeliveryState), ORPHANED, DISABLED)
# The span `rate_last_minute` is averaged over: long enough that a rate of a few a second
# reads steadily, short enough to show a lane held back by its `max_per_second` now.
RATE_SECONDS = 60


async def collect_health(
    connection: AsyncConnection, destinations: Sequence[Destination], since: datetime | None = None
) -> list[dict[str, Any]]:
    """One entry per destination, the configured ones first (in their order, with their URL
    stripped of credentials, and their filters), then any that only the database still
    names. Counts are of deliveries queued since `since`, if given; the oldest pending
    delivery is regardless of it."""
    configured = [destination.name for destination in destinations]
    counts = await connection.execute(
        sa.select(deliveries.c.destination, deliveries.c.state, sa.func.count())
        .where(*([deliveries.c.created_at >= since] if since is not None else []))
        .group_by(deliveries.c.destination, deliveries.c.state)
    )
    oldest = await connection.execute(
        sa.select(deliveries.c.destination, sa.func.min(deliveries.c.created_at))
        .where(deliveries.c.state == DeliveryState.PENDING.value)
        .group_by(deliveries.c.destination)
    )
    health = await connection.execute(sa.select(destination_health))
    disabled = await disabled_destinations_in(connection)
    rates = await _rates(connection)
    entries = {d.name: _configured_entry(d) for d in destinations}
    for name, state, count in counts:
        entry = entries.setdefault(name, _entry(name))
        entry[shown_state(state, name, configured, disabled)] += count
    for name, created_at in oldest:
        # Of a backlog being sent: not of one that waits for its destination to be enabled.
        if name in configured and name not in disabled:
            entries[name]["oldest_pending"] = oldest_pending(created_at)
    for row in health:
        _add_health(entries.setdefault(row.destination, _entry(row.destination)), row)
    for name, state in disabled.items():
        _add_disabled(entries.setdefault(name, _entry(name)), state)
    for name, rate in rates.items():
        entries.setdefault(name, _entry(name))["rate_last_minute"] = rate
    known = [entries.pop(name) for name in configured]
    return known + [entries[name] for name in sorted(entries)]


async def destination_health_of(
    connection: AsyncConnection, name: str, destinations: Sequence[Destination], limit: int
) -> dict[str, Any] | None:
    """One destination's entry as `collect_health` gives it, counted now, but each state no
    further than `limit` (`limit` + 1 reads "more than"): each count walks one range of an
    index on (destination, state), however many deliveries the others have. None if neither
    the configuration nor the database names it. Its oldest pending delivery is not read."""
    configured = {destination.name: destination for destination in destinations}
    entry = _configured_entry(configured[name]) if name in configured else _entry(name)
    disabled = await disabled_destinations_in(connection)
    for state in DeliveryState:
        found = (
            sa.select(deliveries.c.id)
            .where(deliveries.c.destination == name, deliveries.c.state == state.value)
            .limit(limit + 1)
        )
        counted = sa.select(sa.func.count()).select_from(found.subquery())
        entry[shown_state(state.value, name, configured, disabled)] += (
            await connection.execute(counted)
        ).scalar_one()
    row = (
        await connection.execute(
            sa.select(destination_health).where(destination_health.c.destination == name)
        )
    ).first()
    if row is not None:
        _add_health(entry, row)
    entry["rate_last_minute"] = (await _rates(connection)).get(name, 0.0)
    if name in disabled:
        _add_disabled(entry, disabled[name])
    named = (
        entry["configured"]
        or row is not None
        or name in disabled
        or any(entry[state] for state in COUNTED)
    )
    return entry if named else None


async def refuse_unknown_destination(
    connection: AsyncConnection, destinations: Sequence[Destination], name: str
) -> None:
    """Refuse `name` as `find_destination` does (in its words) unless a destination of
    `destinations` has it or the database still names it (a delivery or a health row, as
    `collect_health` lists them): one no longer configured stays listable while it does.
    Each lookup is one probe of an index (deliveries by destination; health's key)."""
    if any(destination.name == name for destination in destinations):
        return
    named = sa.select(
        sa.or_(
            sa.exists().where(deliveries.c.destination == name),
            sa.exists().where(destination_health.c.destination == name),
        )
    )
    if not (await connection.execute(named)).scalar_one():
        find_destination(destinations, name)


async def _rates(connection: AsyncConnection) -> dict[str, float]:
    """Attempts started in the last RATE_SECONDS a second, by destination: every
    forwarder's, as the database holds them. It reads a range of the attempts' index on
    attempted_at (a minute of attempts), each joined to its delivery by its key. Not
    narrowed to one destination, even for one: given the destination, SQLite walks all of
    its deliveries (a million) rather than the last minute's attempts."""
    since = datetime.now(UTC) - timedelta(seconds=RATE_SECONDS)
    rows = await connection.execute(
        sa.select(deliveries.c.destination, sa.func.count())
        .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
        .where(attempts.c.attempted_at >= since)
        .group_by(deliveries.c.destination)
    )
    return {destination: round(count / RATE_SECONDS, 2) for destination, count in rows}


def _add_disabled(entry: dict[str, Any], state: Disabled) -> None:
    entry["disabled_at"] = _iso(state.disabled_at)
    entry["disabled_by"] = state.disabled_by
    entry["disabled_reason"] = state.reason


def _add_health(entry: dict[str, Any], row: sa.Row[Any]) -> None:
    entry["last_success_at"] = _iso(row.last_success_at)
    entry["last_failure_at"] = _iso(row.last_failure_at)
    entry["consecutive_failures"] = row.consecutive_failures


def oldest_pending(created_at: datetime | str | None) -> dict[str, Any] | None:
    """When the oldest pending delivery was queued, and how long ago."""
    if created_at is None:
        return None
    # An aggregate skips the column's type: SQLite hands back its stored text.
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    created_at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
    age = (datetime.now(UTC) - created_at).total_seconds()
    return {"created_at": created_at.isoformat(), "age_seconds": round(age, 1)}


def _entry(name: str) -> dict[str, Any]:
    """A destination only the database still names: no URL or filters to show."""
    return {
        "destination": name,
        "configured": False,
        "url": None,
        "event_types": None,
        "outcomes": None,
        "max_in_flight": None,
        "max_per_second": None,
        **dict.fromkeys(COUNTED, 0),
        "oldest_pending": None,
        "last_success_at": None,
        "last_failure_at": None,
        "consecutive_failures": 0,
        # Set while the destination is disabled (`store.destination_states`): when, by whom
        # ("410", or who disabled it by hand) and why.
        "disabled_at": None,
        "disabled_by": None,
        "disabled_reason": None,
        "rate_last_minute": 0.0,
    }


def _configured_entry(destination: Destination) -> dict[str, Any]:
    return {
        **_entry(destination.name),
        "configured": True,
        "url": shown_url(destination.url),
        "event_types": sorted(destination.event_types or ()) or None,
        # What it is sent, its default included (stale only when named): null read as
        # "every outcome", which it is not.
        "outcomes": sorted(destination.wanted_outcomes),
        "max_in_flight": destination.max_in_flight,
        # None: unlimited.
        "max_per_second": destination.max_per_second,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
