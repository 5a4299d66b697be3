"""The console's pages: each a plain handler that reads through the same store queries the
CLI and the admin API use, and renders one template. Every list is a cursor page."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any, TypeVar, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from receiver.console.charts import hourly_chart
from receiver.console.rendering import page
from receiver.console.zones import zone_of
from receiver.exceptions import InvalidRequestError, NotFoundError
from receiver.forward.breaker import TRIP_AFTER, tripped
from receiver.metrics import metrics_of
from receiver.model import GENERATION_STATUSES, Outcome
from receiver.operators.moments import read_moment
from receiver.operators.replays import ReplayState
from receiver.services import services_of
from receiver.store.activity import hourly_activity
from receiver.store.database import transaction
from receiver.store.deliveries import DISABLED, ORPHANED, DeliveryState
from receiver.store.filters import EventFilter
from receiver.store.health import refuse_unknown_destination
from receiver.store.notifications import last_notifications
from receiver.store.pages import MAX_ID
from receiver.store.queries import (
    DeliveryFilter,
    get_event,
    get_record,
    list_deliveries,
    list_events,
    record_history,
)
from receiver.store.records import RecordFilter, list_records
from receiver.store.stats import credits_by_model
from receiver.urls import refuse_nul

PAGE_SIZE = 50
# The overview's last notifications: an outage's few messages, at a glance.
SHOWN_NOTIFICATIONS = 10
# The tabs of deliveries, in the order an operator acts on them: dead letters first (what
# needs action), then what is under way or stuck, then history. A destination's page opens
# on the first with any.
DELIVERY_STATES = (
    DeliveryState.DEAD.value,
    DeliveryState.PENDING.value,
    DISABLED,
    ORPHANED,
    DeliveryState.DELIVERED.value,
    DeliveryState.REPLAYED.value,
    DeliveryState.RECOVERED.value,
)


def _zoned_moment(value: Any, info: ValidationInfo) -> datetime:
    """A filter's time, as the CLI reads it, but read in the browser's zone (`read_query`)."""
    zone, now = cast(tuple[tzinfo, datetime], info.context)
    return read_moment(str(value), str(info.field_name), zone, now)


# A time the console's filters read: 24h, 7d, 2026-12-01, 2026-12-01T09:00 (the browser's
# zone), or with a zone. The replay page's confirmation carries it back as ISO 8601 in UTC,
# so what it replays is what it counted, not what "24h" means a minute later.
ZonedMoment = Annotated[datetime, PlainValidator(_zoned_moment)]


def read_pin(value: object) -> datetime:
    """An instant a confirmation carries back (`dead_by`): exactly as its page wrote it, ISO
    8601 in UTC, nothing a person types. Anything else is a ValueError. Written back and
    compared, because `fromisoformat` alone lets some through (a trailing NUL, measured).
    The whole conversion is in the `try`: at year 1 or 9999 an offset carries the instant
    out of `datetime`'s range, an OverflowError (it was a 500)."""
    try:
        found = datetime.fromisoformat(value) if isinstance(value, str) else None
        in_utc = found.astimezone(UTC) if found is not None and found.tzinfo else None
    except (ValueError, OverflowError):
        in_utc = None
    if in_utc is None or in_utc.isoformat() != value:
        raise ValueError("is not an instant this console wrote")
    return in_utc


class _Query(BaseModel):
    """A page's query string: blank fields mean no filter; anything unreadable is a 400."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    cursor: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    # Nothing stored holds one, and PostgreSQL refuses it in any text: it was a 500.
    _no_nul = field_validator("*")(refuse_nul)


Q = TypeVar("Q", bound=_Query)


class ReplayQuery(_Query):
    type: str | None = None
    since: ZonedMoment | None = None
    until: ZonedMoment | None = None
    delivery_state: ReplayState | None = None
    destination: str | None = None
    # The largest dead letter the dry run counted: its confirmation replays up to it alone.
    up_to: int | None = Field(default=None, ge=1, le=MAX_ID)
    # When it counted them: its confirmation replays those dead by then alone.
    dead_by: Annotated[datetime, PlainValidator(read_pin)] | None = None

    def event_filter(self) -> EventFilter:
        return EventFilter(
            type=self.type,
            since=self.since,
            until=self.until,
            delivery_state=self.delivery_state,
            destination=self.destination,
            up_to=self.up_to,
            dead_by=self.dead_by,
        )


class EventsQuery(_Query):
    type: str | None = None
    outcome: Outcome | None = None
    since: ZonedMoment | None = None
    until: ZonedMoment | None = None


class FailedQuery(_Query):
    error_code: str | None = None
    model: str | None = None
    since: ZonedMoment | None = None
    until: ZonedMoment | None = None
    q: str | None = None


class RecordsQuery(_Query):
    status: str | None = None
    q: str | None = None

    @field_validator("status")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in GENERATION_STATUSES:
            raise ValueError(f"give one of {', '.join(sorted(GENERATION_STATUSES))}")
        return value


def _known_state(value: str | None) -> str | None:
    if value is not None and value not in DELIVERY_STATES:
        raise ValueError(f"give one of {', '.join(DELIVERY_STATES)}")
    return value


class DeliveriesQuery(_Query):
    state: str = DeliveryState.DEAD.value
    destination: str | None = None

    _known = field_validator("state")(_known_state)


class DestinationQuery(_Query):
    # None opens the tab that needs action first (`recovery.destination`).
    state: str | None = None

    _known = field_validator("state")(_known_state)


def read_query(model: type[Q], request: Request, values: Mapping[str, Any]) -> Q:
    """`values` (a query string or a form) as `model`; a bad one is a 400 naming its field.
    A time raises its own InvalidRequestError (`read_moment`), which pydantic lets through."""
    try:
        return model.model_validate(dict(values), context=(zone_of(request), datetime.now(UTC)))
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "filter"
        reason = first["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(f"{name}: {reason}") from None


def _read(model: type[Q], request: Request) -> Q:
    return read_query(model, request, request.query_params)


async def overview(request: Request) -> Response:
    services = services_of(request)
    settings = services.settings
    now = datetime.now(UTC)
    # Counting every delivery and record takes longer than a page may (0.35 s of a million,
    # measured): the totals /metrics last computed, and when.
    totals = await metrics_of(request).totals(services)
    async with transaction(services.engine) as connection:
        hours = await hourly_activity(connection, now)
        # The day's records only: a range of the index on when they changed.
        day_credits = await credits_by_model(connection, now - timedelta(hours=24))
        any_events = bool((await list_events(connection, EventFilter(), 1)).items)
        notifications = await last_notifications(connection, SHOWN_NOTIFICATIONS)
    return page(
        request,
        "overview.html",
        numbers=totals.numbers | {"credits": day_credits},
        counted_at=totals.counted_at.isoformat(timespec="seconds"),
        events_chart=hourly_chart("events", hours, ("events",), zone_of(request)),
        deliveries_chart=hourly_chart(
            "deliveries", hours, ("delivered", "failed"), zone_of(request)
        ),
        received_today=sum(hour["events"] for hour in hours),
        reconciling=settings.rivya_api_key is not None,
        any_events=any_events,
        paused=_paused(totals.numbers["destinations"]),
        trip_after=TRIP_AFTER,
        notifications=notifications,
        notify_urls=len(settings.notify_urls),
    )


def _paused(entries: list[dict[str, Any]]) -> set[str]:
    """The destinations whose breaker has paused them, by their stored failures in a row:
    the breakers themselves are in the forwarding processes' memory."""
    return {e["destination"] for e in entries if tripped(e["consecutive_failures"])}


async def failed_jobs(request: Request) -> Response:
    query = _read(FailedQuery, request)
    which = RecordFilter(
        status="failed",
        error_code=query.error_code,
        model=query.model,
        since=query.since,
        until=query.until,
        search=query.q,
    )
    async with transaction(services_of(request).engine) as connection:
        found = await list_records(connection, which, datetime.now(UTC), PAGE_SIZE, query.cursor)
    return page(request, "failed.html", query=query, page=found)


async def records(request: Request) -> Response:
    query = _read(RecordsQuery, request)
    which = RecordFilter(status=query.status, search=query.q)
    async with transaction(services_of(request).engine) as connection:
        found = await list_records(connection, which, datetime.now(UTC), PAGE_SIZE, query.cursor)
    return page(
        request, "records.html", query=query, page=found, statuses=sorted(GENERATION_STATUSES)
    )


def _id_of(request: Request, name: str) -> str:
    """The ID a page is for: in its path, or in `?id=` where the path cannot hold it
    (`page_of`)."""
    found = request.path_params.get(name, request.query_params.get("id"))
    if found is None:
        raise HTTPException(400, "The address names no ID.")
    return str(found)


async def record(request: Request) -> Response:
    task_id = _id_of(request, "task_id")
    services = services_of(request)
    async with transaction(services.engine) as connection:
        try:
            shown = await get_record(connection, task_id)
        except NotFoundError:
            raise HTTPException(404, "No such record.") from None
        history = await record_history(connection, task_id)
    # Asking Rivya about the task is offered only where it can work.
    reconciling = services.settings.rivya_api_key is not None
    return page(request, "record.html", record=shown, history=history, reconciling=reconciling)


async def events(request: Request) -> Response:
    query = _read(EventsQuery, request)
    which = EventFilter(
        type=query.type, outcome=query.outcome, since=query.since, until=query.until
    )
    async with transaction(services_of(request).engine) as connection:
        found = await list_events(connection, which, PAGE_SIZE, query.cursor)
    return page(
        request, "events.html", query=query, page=found, outcomes=[o.value for o in Outcome]
    )


async def event(request: Request) -> Response:
    async with transaction(services_of(request).engine) as connection:
        try:
            shown = await get_event(connection, _id_of(request, "event_id"))
        except NotFoundError:
            raise HTTPException(404, "No such event.") from None
    return page(request, "event.html", event=shown)


async def deliveries(request: Request) -> Response:
    query = _read(DeliveriesQuery, request)
    services = services_of(request)
    configured = [d.name for d in services.settings.forwarding]
    which = DeliveryFilter(state=query.state, destination=query.destination)
    async with transaction(services.engine) as connection:
        if query.destination is not None:
            await refuse_unknown_destination(
                connection, services.settings.forwarding, query.destination
            )
        found = await list_deliveries(connection, which, configured, PAGE_SIZE, query.cursor)
    return page(
        request,
        "deliveries.html",
        query=query,
        page=found,
        states=DELIVERY_STATES,
        destinations=configured,
    )
