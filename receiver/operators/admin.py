"""The admin API under /admin, behind a bearer token: look up, list, count, replay, and
register the product's tasks."""

import hmac
from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.bodies import read_small_body
from receiver.destinations import find_destination
from receiver.exceptions import InvalidRequestError, NotFoundError, UnauthorizedError
from receiver.metrics import metrics_of
from receiver.model import Outcome
from receiver.operators import actions, replays
from receiver.operators.destination_states import checked_reason, switch_destination
from receiver.operators.moments import Moment
from receiver.operators.openapi import openapi_route
from receiver.operators.replays import ReplayState
from receiver.operators.spans import parse_span
from receiver.responses import ORJSONResponse
from receiver.services import services_of
from receiver.settings import describe_errors
from receiver.store.database import transaction
from receiver.store.deliveries import DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.health import refuse_unknown_destination
from receiver.store.queries import (
    DeliveryFilter,
    get_event,
    get_record,
    list_deliveries,
    list_events,
)
from receiver.store.records import RecordFilter, list_records
from receiver.store.stats import collect_stats
from receiver.urls import refuse_nul

M = TypeVar("M", bound=BaseModel)
WHO = "admin-api"


class RequireAdminToken:
    """401 unless `Authorization: Bearer <token>` matches; everyone, if no token is set."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self._expected = f"Bearer {token.get_secret_value()}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = Headers(scope=scope).get("authorization", "").encode()
        if self._expected is None or not hmac.compare_digest(given, self._expected):
            raise UnauthorizedError("a valid admin bearer token is required")
        await self.app(scope, receive, send)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Nothing stored holds one, and PostgreSQL refuses it in any text: it was a 500.
    _no_nul = field_validator("*")(refuse_nul)


class Window(_Strict):
    since: Moment | None = None
    until: Moment | None = None


class ReplayOne(_Strict):
    # Only this destination, whatever its filters; default: each that wants the event.
    destination: str | None = None


class ReplayRequest(Window, ReplayOne):
    type: str | None = None
    # dead: each dead letter (of `destination`), replayed where it died. pending, delivered:
    # each event's latest delivery to each destination (or to `destination`), replayed only
    # where it is in this state.
    delivery_state: ReplayState | None = None
    # Count what would be queued, by destination; change nothing.
    dry_run: StrictBool = False


# Event IDs one reprocess may name: a 64 KiB body (`receiver.bodies`) holds about a thousand
# of Rivya's, and more is the work of a filter (`quarantined`).
MAX_REPROCESS_IDS = 1000


class ReprocessRequest(_Strict):
    """Event IDs, or every quarantined event: one of the two."""

    event_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_REPROCESS_IDS)
    quarantined: StrictBool = False

    @field_validator("event_ids")
    @classmethod
    def _check_ids(cls, value: list[str] | None) -> list[str] | None:
        for event_id in value or ():
            refuse_nul(event_id)
        return value

    @model_validator(mode="after")
    def _one_of_the_two(self) -> "ReprocessRequest":
        if (self.event_ids is None) == (not self.quarantined):
            raise ValueError("give event_ids or quarantined: true, not both")
        return self


class EventsQuery(Window):
    type: str | None = None
    outcome: Outcome | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class DeliveriesQuery(_Strict):
    state: DeliveryState | Literal["orphaned", "disabled"] | None = None
    destination: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class TaskRegistration(_Strict):
    task_id: str
    reference: str | None = None


class RecordsQuery(_Strict):
    status: Literal["queued", "processing", "succeeded", "failed"] | None = None
    reference: str | None = None
    stale_after: str | None = None  # a span: 15m, 24h
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None

    @field_validator("stale_after")
    @classmethod
    def _check_span(cls, value: str | None) -> str | None:
        if value is not None and parse_span(value) is None:
            raise ValueError("give a span like 15m, 24h or 7d")
        return value


class StatsQuery(_Strict):
    since: Moment | None = None


async def show_events(request: Request) -> Response:
    query = _parse(EventsQuery, request)
    which = EventFilter(
        type=query.type, since=query.since, until=query.until, outcome=query.outcome
    )
    async with transaction(services_of(request).engine) as connection:
        page = await list_events(connection, which, query.limit, query.cursor)
    return ORJSONResponse({"events": page.items, "next_cursor": page.next_cursor})


async def show_event(request: Request) -> Response:
    async with transaction(services_of(request).engine) as connection:
        return ORJSONResponse(await get_event(connection, request.path_params["event_id"]))


async def show_record(request: Request) -> Response:
    async with transaction(services_of(request).engine) as connection:
        return ORJSONResponse(await get_record(connection, request.path_params["task_id"]))


async def show_records(request: Request) -> Response:
    query = _parse(RecordsQuery, request)
    which = RecordFilter(
        status=query.status,
        reference=query.reference,
        stale_after=parse_span(query.stale_after) if query.stale_after else None,
    )
    async with transaction(services_of(request).engine) as connection:
        page = await list_records(connection, which, datetime.now(UTC), query.limit, query.cursor)
    return ORJSONResponse({"records": page.items, "next_cursor": page.next_cursor})


async def register_task(request: Request) -> Response:
    wanted = await _body(TaskRegistration, request)
    record, created = await actions.register(
        services_of(request).engine, wanted.task_id, wanted.reference, WHO
    )
    return ORJSONResponse(record, status_code=201 if created else 200)


async def show_deliveries(request: Request) -> Response:
    query = _parse(DeliveriesQuery, request)
    which = DeliveryFilter(state=query.state, destination=query.destination)
    services = services_of(request)
    configured = [d.name for d in services.settings.forwarding]
    async with transaction(services.engine) as connection:
        if query.destination is not None:
            await refuse_unknown_destination(
                connection, services.settings.forwarding, query.destination
            )
        page = await list_deliveries(connection, which, configured, query.limit, query.cursor)
    return ORJSONResponse({"deliveries": page.items, "next_cursor": page.next_cursor})


async def show_stats(request: Request) -> Response:
    query = _parse(StatsQuery, request)
    services = services_of(request)
    async with transaction(services.engine) as connection:
        return ORJSONResponse(
            await collect_stats(
                connection,
                services.settings.forwarding,
                query.since,
                services.settings.reconcile_after,
            )
        )


async def show_destinations(request: Request) -> Response:
    """Counting every delivery takes longer than a listing may (a million: 55 ms quiet, 0.4 s
    on a busy machine, measured): the counts /metrics last computed, and when."""
    totals = await metrics_of(request).totals(services_of(request))
    return ORJSONResponse(
        {
            "destinations": totals.numbers["destinations"],
            "counted_at": totals.counted_at.isoformat(),
        }
    )


async def replay_event(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    wanted = await _body(ReplayOne, request)
    which = EventFilter(event_ids=(event_id,))
    replayed = await replays.replay_served(services_of(request), which, wanted.destination, WHO)
    return ORJSONResponse(replayed.as_json(), status_code=202)


async def replay_matching(request: Request) -> Response:
    wanted = await _body(ReplayRequest, request)
    which = EventFilter(
        type=wanted.type,
        since=wanted.since,
        until=wanted.until,
        delivery_state=wanted.delivery_state,
        destination=wanted.destination,
    )
    replayed = await replays.replay_served(
        services_of(request), which, wanted.destination, WHO, wanted.dry_run
    )
    return ORJSONResponse(replayed.as_json(), status_code=200 if wanted.dry_run else 202)


async def reprocess_events(request: Request) -> Response:
    wanted = await _body(ReprocessRequest, request)
    which = (
        EventFilter(event_ids=tuple(wanted.event_ids))
        if wanted.event_ids
        else EventFilter(outcome=Outcome.QUARANTINED)
    )
    counts = await actions.reprocess_served(services_of(request), which, WHO)
    return ORJSONResponse(counts.as_json())


class EmptyRequest(_Strict):
    """Nothing to give (a ping, an enable): the body is empty, or `{}`."""


async def ping_destination(request: Request) -> Response:
    """Send the destination one signed `receiver.ping` (`forward.ping`): 200 with its
    answer, whatever that was (`ok` says whether it was a 2xx)."""
    await _body(EmptyRequest, request)
    services = services_of(request)
    try:
        destination = find_destination(services.settings.forwarding, request.path_params["name"])
    except InvalidRequestError as exc:
        raise NotFoundError(str(exc)) from exc
    answer = await services.pinger.ping(destination, WHO)
    return ORJSONResponse(answer.as_json())


class DisableRequest(_Strict):
    reason: str | None = None

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, value: str | None) -> str | None:
        try:
            return checked_reason(value)
        except InvalidRequestError as exc:
            raise ValueError(str(exc).removeprefix("reason: ")) from exc


async def enable_destination(request: Request) -> Response:
    await _body(EmptyRequest, request)
    return await _switch(request, True, None)


async def disable_destination(request: Request) -> Response:
    wanted = await _body(DisableRequest, request)
    return await _switch(request, False, wanted.reason)


async def _switch(request: Request, enable: bool, reason: str | None) -> Response:
    """200 with what changed, or that nothing did (`operators.destination_states`); 404 for
    a name no destination has (the reason was checked before: the only refusal left)."""
    services = services_of(request)
    name = request.path_params["name"]
    try:
        switched = await switch_destination(
            services.engine, services.settings.forwarding, name, enable, WHO, reason
        )
    except InvalidRequestError as exc:
        raise NotFoundError(str(exc)) from exc
    return ORJSONResponse(switched.as_json())


async def _body(model: type[M], request: Request) -> M:
    """The JSON body, read bounded (`receiver.bodies`: 64 KiB, the request deadline)."""
    body = await read_small_body(request)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise InvalidRequestError(describe_errors(exc, name_of=str)) from exc


def _parse(model: type[M], request: Request) -> M:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise InvalidRequestError(describe_errors(exc, name_of=str)) from exc


def admin_mount(token: SecretStr | None) -> Mount:
    return Mount(
        "/admin",
        routes=[
            Route("/events", show_events),
            # IDs are Rivya's, so any text: `path` takes one holding a slash too (sent as
            # %2F; the path is decoded before routing), as the console's routes do.
            Route("/events/{event_id:path}/replay", replay_event, methods=["POST"]),
            Route("/events/{event_id:path}", show_event),
            Route("/replay", replay_matching, methods=["POST"]),
            Route("/reprocess", reprocess_events, methods=["POST"]),
            Route("/deliveries", show_deliveries),
            Route("/destinations", show_destinations),
            Route("/destinations/{name}/ping", ping_destination, methods=["POST"]),
            Route("/destinations/{name}/enable", enable_destination, methods=["POST"]),
            Route("/destinations/{name}/disable", disable_destination, methods=["POST"]),
            Route("/records", show_records),
            Route("/records/{task_id:path}", show_record),
            Route("/tasks", register_task, methods=["POST"]),
            Route("/stats", show_stats),
            openapi_route(),
        ],
        middleware=[Middleware(RequireAdminToken, token=token)],
    )
