"""`receiver worker`: the forwarder, reconciliation when a Rivya API key is set, and
scheduled retention, without serving HTTP, for deployments that separate them from `serve`."""

import asyncio
import signal
from contextlib import AsyncExitStack

from receiver.forward.forwarder import Forwarder
from receiver.logs import log
from receiver.operational.alerts import Alerts
from receiver.operational.notifier import Notifier, notifications_table
from receiver.pruner import Pruner
from receiver.reconcile.reconciler import Reconciler
from receiver.reloading import Reloader
from receiver.settings import Settings
from receiver.store.database import create_engine, upgrade_schema
from receiver.tracing.pipeline import Tracing


async def run_worker(settings: Settings, tracing: Tracing | None = None) -> None:
    """Forward until SIGTERM or SIGINT, then stop gracefully, reloading the destinations
    file on SIGHUP; `tracing` traces deliveries and reconciliation passes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = create_engine(settings.database_url, settings.database_busy_timeout_seconds)
    try:
        await upgrade_schema(engine)
        async with AsyncExitStack() as stack:
            # The notifier stops after the alerts, and they after the forwarder.
            notifier = await stack.enter_async_context(
                Notifier(
                    settings.notify_urls,
                    # Links only to a console that is served.
                    settings.public_url if settings.console else None,
                    record=notifications_table(engine),
                )
            )
            alerts = await stack.enter_async_context(Alerts(engine, settings, notify=notifier.send))
            forwarder = None
            if settings.forwarding:
                forwarder = await stack.enter_async_context(
                    Forwarder(
                        engine,
                        settings,
                        tracer=tracing.tracer if tracing else None,
                        on_lane_change=alerts.lane_changed,
                    )
                )
            reconciler = None
            if settings.rivya_api_key is not None:
                reconciler = await stack.enter_async_context(
                    Reconciler(
                        engine,
                        settings,
                        on_stored=forwarder.wake if forwarder else None,
                        tracing=tracing,
                        alerts=alerts,
                    )
                )
                reconciler.run_periodically()
            pruner = None
            if settings.retention_days:
                pruner = await stack.enter_async_context(Pruner(engine, settings))
            # SIGHUP reloads the destinations file (see receiver/reloading.py).
            await stack.enter_async_context(
                Reloader(engine, settings, (forwarder, alerts, reconciler, pruner))
            )
            await stop.wait()
            log.info("worker_stopping")
    finally:
        await engine.dispose()
