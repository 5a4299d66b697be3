"""Work that runs now and then every so many seconds, in the background, until stopped:
reconciliation's passes and retention's runs. A run that fails is logged and the next one
comes on time; stopping cancels a run in progress (each is made of transactions that roll
back whole, so the next run does it again)."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from receiver.logs import log


class Periodic:
    def __init__(
        self,
        name: str,
        interval_seconds: float,
        run: Callable[[], Awaitable[object]],
        failed: str,
    ) -> None:
        """`name` names the task; `failed` is the log line of a run that raised."""
        self._name = name
        self._failed = failed
        self._interval_seconds = interval_seconds
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._periodically(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _periodically(self) -> None:
        while True:
            try:
                await self._run()
            except Exception as exc:  # noqa: BLE001 - a run's failure must not end the loop
                log.warning(self._failed, exc_info=exc)
            await asyncio.sleep(self._interval_seconds)
