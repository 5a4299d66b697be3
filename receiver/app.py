"""The application factory: routes, middleware, error translation and lifespan, listed."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from receiver.health import healthz, readyz
from receiver.ingest.webhooks import receive_rivya_event
from receiver.logs import RequestLogMiddleware
from receiver.operators.admin import admin_mount
from receiver.responses import EXCEPTION_HANDLERS
from receiver.services import Services
from receiver.settings import Settings
from receiver.signatures import StandardWebhooks
from receiver.store.database import create_engine, upgrade_schema
from receiver.store.writer import EventWriter


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Services]]:
        engine = create_engine(settings.database_url, settings.database_busy_timeout_seconds)
        try:
            await upgrade_schema(engine)
            async with EventWriter(engine) as writer:
                verifier = StandardWebhooks(
                    settings.signing_secrets, settings.timestamp_tolerance_seconds
                )
                yield {"services": Services(settings, engine, verifier, writer)}
        finally:
            await engine.dispose()

    return Starlette(
        routes=[
            Route(
                "/webhooks/rivya",
                receive_rivya_event,
                methods=["POST"],
                max_body_size=settings.max_body_bytes,
            ),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            admin_mount(settings.admin_token),
        ],
        middleware=[Middleware(RequestLogMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
