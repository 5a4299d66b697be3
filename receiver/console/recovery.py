"""The console's recovery pages: a destination's own page (its URL, filters, breaker and
deliveries by state), and the first step of each action that recovers: the replay page's dry
run, and the confirmations of a destination's dead-letter replay and of a bulk reprocess,
each with its count (the second steps are in `actions`)."""

import re
from datetime import UTC, datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from receiver.console.pages import (
    DELIVERY_STATES,
    PAGE_SIZE,
    DestinationQuery,
    ReplayQuery,
    read_query,
)
from receiver.console.rendering import page
from receiver.destinations import NAME_PATTERN
from receiver.forward.breaker import tripped
from receiver.model import Outcome
from receiver.operators.nouns import COUNT_LIMIT, capped, counted_capped
from receiver.operators.replays import REPLAY_STATES, count_planned, plan_replay
from receiver.services import services_of
from receiver.store.database import transaction
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.health import destination_health_of
from receiver.store.queries import DeliveryFilter, count_events, list_deliveries

# What "replay this destination's dead letters" replays: its deliveries in state dead.
DEAD_LETTERS = EventFilter(delivery_state=DeliveryState.DEAD)
QUARANTINED = EventFilter(outcome=Outcome.QUARANTINED)


async def replay(request: Request) -> Response:
    """Replay by filter, step one: a dry run, counting the deliveries a replay would queue to
    each destination, and the form that confirms it."""
    query = read_query(ReplayQuery, request, request.query_params)
    settings = services_of(request).settings
    planned = None
    # What the confirmation replays is pinned to what was counted: events received before
    # this instant (`until`) and dead letters up to the largest counted (`up_to`) that had
    # died when it counted (`dead_by`); what arrives or dies after the count waits for the
    # next replay.
    counted_at = datetime.now(UTC)
    # With forwarding off there is nowhere to replay to: the page says so, and offers nothing.
    if settings.forwarding:
        plan = plan_replay(settings, query.event_filter(), query.destination)
        planned = await count_planned(services_of(request).engine, plan)
    return page(
        request,
        "replay.html",
        query=query,
        planned=planned,
        until=min(query.until, counted_at) if query.until else counted_at,
        states=REPLAY_STATES,
        destinations=[d.name for d in settings.forwarding],
    )


def destination_name(request: Request) -> str:
    """The destination a page is for, by its name in the path: only a name a destination can
    have (anything else names none, and is not looked up)."""
    name = str(request.path_params["name"])
    if not re.fullmatch(NAME_PATTERN, name):
        raise HTTPException(404, "No destination has that name.")
    return name


async def destination(request: Request) -> Response:
    """A destination's own page: where it sends and what, whether its breaker has paused
    it, and its deliveries by state, opening on the first tab that holds any."""
    query = read_query(DestinationQuery, request, request.query_params)
    name = destination_name(request)
    services = services_of(request)
    forwarding = services.settings.forwarding
    async with transaction(services.engine) as connection:
        shown = await destination_health_of(connection, name, forwarding, COUNT_LIMIT)
        if shown is None:
            raise HTTPException(404, "No destination has that name.")
        state = query.state or next(
            (state for state in DELIVERY_STATES if shown[state]), DeliveryState.DELIVERED.value
        )
        which = DeliveryFilter(state=state, destination=name)
        configured = [d.name for d in forwarding]
        found = await list_deliveries(connection, which, configured, PAGE_SIZE, query.cursor)
    return page(
        request,
        "destination.html",
        destination=shown,
        state=state,
        page=found,
        tabs={state: capped(shown[state]) for state in DELIVERY_STATES},
        replay_label=f"Replay {counted_capped(shown[DeliveryState.DEAD.value], 'dead letter')}",
        paused=tripped(shown["consecutive_failures"]),
    )


def configured_destination(request: Request) -> str:
    """The destination a dead-letter replay is for: one configured now. Both steps (the
    confirmation and its POST) answer an unknown or removed one with the same 404 page,
    and both a 409 while forwarding is off (there is nowhere to replay to)."""
    name = destination_name(request)
    forwarding = services_of(request).settings.forwarding
    if not forwarding:
        raise HTTPException(409, "Forwarding is off: there is nowhere to replay to.")
    if name not in {d.name for d in forwarding}:
        raise HTTPException(404, "No configured destination has that name.")
    return name


async def confirm_replay(request: Request) -> Response:
    """ "Replay this destination's dead letters", step one: how many, and the form that
    confirms it (`actions.replay_destination`), pinned to the largest dead letter counted
    and to when it counted."""
    name = configured_destination(request)
    services = services_of(request)
    plan = plan_replay(services.settings, DEAD_LETTERS, name)
    planned = await count_planned(services.engine, plan)
    n = planned.by_destination.get(name, 0)
    return page(
        request,
        "confirm.html",
        title=f"Replay the dead letters of {name}",
        sentence=(
            f"{counted_capped(n, 'dead letter')} to {name}: each is queued again, to {name} only"
            " (its other destinations are sent nothing)."
            if n
            else f"{name} has no dead letters: nothing to replay."
        ),
        action=f"/console/destinations/{name}/replay" if n else None,
        hidden={
            "up_to": planned.up_to,
            "dead_by": planned.dead_by.isoformat() if planned.dead_by else None,
        },
        button=f"Replay {counted_capped(n, 'dead letter')}",
        back=f"/console/destinations/{name}",
    )


async def confirm_reprocess(request: Request) -> Response:
    """ "Reprocess quarantined events", step one: how many, and the form that confirms it."""
    async with transaction(services_of(request).engine) as connection:
        n = await count_events(connection, QUARANTINED, COUNT_LIMIT)
    return page(
        request,
        "confirm.html",
        title="Reprocess quarantined events",
        sentence=(
            f"{counted_capped(n, 'quarantined event')}: each is parsed and applied again, and the"
            " answer says how many changed outcome."
            if n
            else "No quarantined events: nothing to reprocess."
        ),
        action="/console/reprocess" if n else None,
        button=f"Reprocess {counted_capped(n, 'event')}",
        back="/console/events?outcome=quarantined",
    )
