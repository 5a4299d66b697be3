"""The admin API under /admin, behind a bearer token."""

import hmac

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.exceptions import UnauthorizedError
from receiver.responses import ORJSONResponse
from receiver.services import services_of
from receiver.store.queries import get_event, get_record


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


async def show_event(request: Request) -> Response:
    async with services_of(request).engine.connect() as connection:
        return ORJSONResponse(await get_event(connection, request.path_params["event_id"]))


async def show_record(request: Request) -> Response:
    async with services_of(request).engine.connect() as connection:
        return ORJSONResponse(await get_record(connection, request.path_params["task_id"]))


def admin_mount(token: SecretStr | None) -> Mount:
    return Mount(
        "/admin",
        routes=[
            Route("/events/{event_id}", show_event),
            Route("/records/{task_id}", show_record),
        ],
        middleware=[Middleware(RequireAdminToken, token=token)],
    )
