"""Probes: /healthz says the process answers, /readyz that it can store events."""

from starlette.requests import Request
from starlette.responses import Response

from receiver.responses import ORJSONResponse
from receiver.services import services_of
from receiver.store.database import database_unavailable, schema_is_current


async def healthz(_: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        current = await schema_is_current(services_of(request).engine)
    except Exception as exc:
        if not database_unavailable(exc):
            raise  # not the database's absence: a fault of ours, answered 500 and logged
        return ORJSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    if not current:
        return ORJSONResponse({"status": "unavailable", "database": "schema_not_current"}, 503)
    return ORJSONResponse({"status": "ready"})
