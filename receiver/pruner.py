"""Scheduled retention, in `receiver serve` and `receiver worker`: at start and then every
RECEIVER_RETENTION_INTERVAL_SECONDS, orphaned deliveries older than RECEIVER_RETENTION_DAYS
are dead-lettered, then the events older than that whose forwarding is finished are pruned
(see `store.retention`: in chunks, each a short transaction, replicas taking different
ones). Each run writes one audit line, and one more when it dead-lettered deliveries, with
what its committed chunks removed even when a later chunk failed.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import Destination
from receiver.logs import log
from receiver.operators.actions import prune_older_than
from receiver.periodic import Periodic
from receiver.settings import Settings
from receiver.store.retention import Pruned, dead_letter_orphans

WHO = "retention"


@dataclass(frozen=True, slots=True)
class RetentionRun:
    orphaned: int
    pruned: Pruned


class Pruner:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        on_run: Callable[[int, int], None] | None = None,
    ) -> None:
        """`on_run(events_pruned, deliveries_orphaned)` is told of every run that finished
        (the metrics)."""
        if not settings.retention_days:
            raise ValueError("RECEIVER_RETENTION_DAYS=0 keeps everything: nothing to prune")
        self._engine = engine
        self._retention = timedelta(days=settings.retention_days)
        self._configured = {destination.name for destination in settings.forwarding}
        self._on_run = on_run
        self._periodic = Periodic(
            "pruner", settings.retention_interval_seconds, self.run_once, "retention_failed"
        )

    def reconfigure(self, destinations: Sequence[Destination]) -> None:
        """From the next run on, the deliveries of a destination not in `destinations` are
        orphans (a reload)."""
        self._configured = {destination.name for destination in destinations}

    async def __aenter__(self) -> "Pruner":
        self._periodic.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A chunk cut short is rolled back whole; the next run does it again.
        await self._periodic.stop()

    async def run_once(self) -> RetentionRun:
        now = datetime.now(UTC)
        older_than = now - self._retention
        # Audited even when a later chunk fails, as `prune_older_than` audits: what the
        # chunks before it committed is gone for good.
        orphaned: list[int] = []
        try:
            await dead_letter_orphans(
                self._engine, older_than, self._configured, now, on_chunk=orphaned.append
            )
        finally:
            if sum(orphaned):
                log.info("audit", who=WHO, what="dead_letter_orphaned", count=sum(orphaned))
        pruned = await prune_older_than(self._engine, older_than, WHO)
        if self._on_run is not None:
            self._on_run(pruned.events, sum(orphaned))
        return RetentionRun(sum(orphaned), pruned)
