"""Read-only operator commands: list and show events, records, deliveries and destinations;
count."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.model import GENERATION_STATUSES, Outcome
from receiver.operators import views
from receiver.operators.terminal import (
    emit,
    json_option,
    load_settings,
    parse_duration,
    parse_moment,
    run_with_store,
)
from receiver.store.database import transaction
from receiver.store.deliveries import DISABLED, ORPHANED, DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.health import collect_health, refuse_unknown_destination
from receiver.store.pages import Page
from receiver.store.queries import (
    DeliveryFilter,
    get_event,
    get_record,
    list_deliveries,
    list_events,
)
from receiver.store.records import RecordFilter, list_records
from receiver.store.stats import collect_stats

T = TypeVar("T")
OUTCOMES = click.Choice([outcome.value for outcome in Outcome])
STATES = click.Choice([state.value for state in DeliveryState])
LISTED_STATES = click.Choice([*(state.value for state in DeliveryState), ORPHANED, DISABLED])
since_option = click.option("--since", help="ISO 8601 time, or a span back from now: 24h, 7d.")
until_option = click.option("--until", help="ISO 8601 time, or a span back from now.")
type_option = click.option("--type", "event_type", help="Event type, e.g. generation.failed.")
limit_option = click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
cursor_option = click.option("--cursor", help="Continue a listing where its last page ended.")


def read(query: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def run(engine: AsyncEngine) -> T:
        async with transaction(engine) as connection:
            return await query(connection)

    return run_with_store(run)


@click.group()
def events() -> None:
    """Stored events."""


@events.command("list")
@type_option
@since_option
@until_option
@click.option("--outcome", type=OUTCOMES)
@limit_option
@cursor_option
@json_option
def events_list(
    event_type: str | None,
    since: str | None,
    until: str | None,
    outcome: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List events, newest first."""
    which = EventFilter(
        type=event_type,
        since=parse_moment(since, "--since"),
        until=parse_moment(until, "--until"),
        outcome=outcome,
    )
    page = read(lambda connection: list_events(connection, which, limit, cursor))
    emit({"events": page.items, "next_cursor": page.next_cursor}, as_json, views.event_page)


@events.command("show")
@click.argument("event_id")
@json_option
def events_show(event_id: str, as_json: bool) -> None:
    """One event: payload, outcome, deliveries and their attempts."""
    # A pending delivery to a destination no longer configured reads orphaned, as listed.
    configured = [d.name for d in load_settings().forwarding]
    shown = read(lambda connection: get_event(connection, event_id, configured))
    emit(shown, as_json, views.event)


@click.group()
def records() -> None:
    """Generation records."""


@records.command("list")
@click.option("--status", type=click.Choice(sorted(GENERATION_STATUSES)))
@click.option("--reference", help="Only the record the product registered with this reference.")
@click.option(
    "--stale-after",
    help="Only records not terminal and unchanged for this long: 15m, 24h.",
)
@limit_option
@cursor_option
@json_option
def records_list(
    status: str | None,
    reference: str | None,
    stale_after: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List records, most recently changed first."""
    which = RecordFilter(
        status=status,
        reference=reference,
        stale_after=parse_duration(stale_after, "--stale-after") if stale_after else None,
    )
    now = datetime.now(UTC)
    page = read(lambda connection: list_records(connection, which, now, limit, cursor))
    emit({"records": page.items, "next_cursor": page.next_cursor}, as_json, views.record_page)


@records.command("show")
@click.argument("task_id")
@json_option
def records_show(task_id: str, as_json: bool) -> None:
    """One generation's record."""
    emit(read(lambda connection: get_record(connection, task_id)), as_json, views.record)


@click.group()
def deliveries() -> None:
    """Forwarding deliveries."""


@deliveries.command("list")
@click.option(
    "--state",
    type=LISTED_STATES,
    help="orphaned: pending, to a destination no longer configured; disabled: pending, to a"
    " destination disabled.",
)
@click.option("--destination", help="Only deliveries to this destination.")
@limit_option
@cursor_option
@json_option
def deliveries_list(
    state: str | None, destination: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List deliveries, newest first."""
    which = DeliveryFilter(state=state, destination=destination)
    forwarding = load_settings().forwarding
    configured = [d.name for d in forwarding]

    async def listed(connection: AsyncConnection) -> Page:
        if destination is not None:
            await refuse_unknown_destination(connection, forwarding, destination)
        return await list_deliveries(connection, which, configured, limit, cursor)

    page = read(listed)
    data: dict[str, Any] = {"deliveries": page.items, "next_cursor": page.next_cursor}
    emit(data, as_json, views.delivery_page)


@click.command()
@since_option
@json_option
def stats(since: str | None, as_json: bool) -> None:
    """Events, deliveries (by destination), records, credits and failure codes, since a
    time or ever."""
    moment = parse_moment(since, "--since")
    settings = load_settings()
    after = settings.reconcile_after
    emit(
        read(lambda connection: collect_stats(connection, settings.forwarding, moment, after)),
        as_json,
        views.stats,
    )


@click.group()
def destinations() -> None:
    """Where events are forwarded."""


@destinations.command("list")
@json_option
def destinations_list(as_json: bool) -> None:
    """Each destination: URL, filters and health, with any the database still names that
    are no longer configured (their pending deliveries orphaned), and whether each is
    disabled (its pending deliveries disabled)."""
    configured = load_settings().forwarding
    found = read(lambda connection: collect_health(connection, configured))
    emit({"destinations": found}, as_json, views.destinations)
