"""The admin API under /admin, behind a bearer token: look up, list, replay."""

import hmac
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.exceptions import (
    ForwardingDisabledError,
    InvalidRequestError,
    NotFoundError,
    UnauthorizedError,
)
from receiver.logs import log
from receiver.responses import ORJSONResponse
from receiver.services import Services, services_of
from receiver.settings import describe_errors
from receiver.store.database import transaction
from receiver.store.deliveries import DeliveryState, ReplayFilter, replay_events
from receiver.store.queries import get_event, get_record, list_deliveries

M = TypeVar("M", bound=BaseModel)


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


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    delivery_state: DeliveryState | None = None


class DeliveriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: DeliveryState | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    before: int | None = None


async def show_event(request: Request) -> Response:
    async with transaction(services_of(request).engine) as connection:
        return ORJSONResponse(await get_event(connection, request.path_params["event_id"]))


async def show_record(request: Request) -> Response:
    async with transaction(services_of(request).engine) as connection:
        return ORJSONResponse(await get_record(connection, request.path_params["task_id"]))


async def show_deliveries(request: Request) -> Response:
    query = _parse(DeliveriesQuery, dict(request.query_params))
    async with transaction(services_of(request).engine) as connection:
        rows = await list_deliveries(connection, query.state, query.limit, query.before)
    next_before = rows[-1]["id"] if len(rows) == query.limit else None
    return ORJSONResponse({"deliveries": rows, "next_before": next_before})


async def replay_event(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    replayed = await _replay(services_of(request), ReplayFilter(event_ids=(event_id,)))
    if not replayed:
        raise NotFoundError(f"no event {event_id!r}")
    return ORJSONResponse({"replayed": replayed}, status_code=202)


async def replay_matching(request: Request) -> Response:
    body = await request.body()
    wanted = _parse_json(ReplayRequest, body or b"{}")
    which = ReplayFilter(
        type=wanted.type,
        since=wanted.since,
        until=wanted.until,
        delivery_state=wanted.delivery_state,
    )
    return ORJSONResponse({"replayed": await _replay(services_of(request), which)}, 202)


async def _replay(services: Services, which: ReplayFilter) -> int:
    if services.settings.forward_url is None:
        raise ForwardingDisabledError("forwarding is off: set RECEIVER_FORWARD_URL")
    async with transaction(services.engine) as connection:
        replayed = await replay_events(connection, which, datetime.now(UTC))
    log.info("audit", who="admin-api", what="replay", count=replayed)
    if services.forwarder is not None:
        services.forwarder.wake()
    return replayed


def _parse(model: type[M], values: dict[str, str]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequestError(describe_errors(exc, name_of=str)) from exc


def _parse_json(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequestError(describe_errors(exc, name_of=str)) from exc


def admin_mount(token: SecretStr | None) -> Mount:
    return Mount(
        "/admin",
        routes=[
            Route("/events/{event_id}", show_event),
            Route("/events/{event_id}/replay", replay_event, methods=["POST"]),
            Route("/replay", replay_matching, methods=["POST"]),
            Route("/deliveries", show_deliveries),
            Route("/records/{task_id}", show_record),
        ],
        middleware=[Middleware(RequireAdminToken, token=token)],
    )
