"""`receiver worker`: the forwarder alone, for deployments that separate it from `serve`."""

import asyncio
import signal

from receiver.forward.forwarder import Forwarder
from receiver.logs import log
from receiver.settings import Settings
from receiver.store.database import create_engine, upgrade_schema


async def run_worker(settings: Settings) -> None:
    """Forward until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = create_engine(settings.database_url, settings.database_busy_timeout_seconds)
    try:
        await upgrade_schema(engine)
        async with Forwarder(engine, settings):
            await stop.wait()
            log.info("worker_stopping")
    finally:
        await engine.dispose()
