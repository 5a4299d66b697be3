"""The long-lived parts a request handler needs, made in the app's lifespan."""

from dataclasses import dataclass
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.types import Scope

from receiver.forward.forwarder import Forwarder
from receiver.forward.ping import Pinger
from receiver.settings import Settings
from receiver.signatures import Verifier
from receiver.store.writer import EventWriter
from receiver.tracing.pipeline import Tracing


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    verifier: Verifier
    writer: EventWriter
    forwarder: Forwarder | None
    # Test sends: the admin API's and the console's.
    pinger: Pinger
    # None when tracing is off: the ingest path then starts no span at all.
    tracing: Tracing | None = None


def services_in(scope: Scope) -> Services:
    # On the application's state, not the lifespan's: Starlette copies lifespan state into
    # every request, and on the ingest path that copy is measurable.
    return cast(Services, scope["app"].state.services)


def services_of(request: Request) -> Services:
    return services_in(request.scope)
