"""Raising and ending operational conditions, each as an event stored and forwarded like
Rivya's (to the destinations that name it) and told to people (the notifier).

Edge-triggered: a condition is raised when it starts and ended when it stops, never once per
check. Which process does either is decided in the database (`store.conditions`), so replicas
raise and end each once; the process that did it tells the notifier.

What the forwarder and reconciliation see (a breaker pausing a lane, a balance, a key refused)
they hand over as it happens; the rest is looked at every `RECEIVER_ALERT_CHECK_SECONDS`
(`check`): dead-letter windows due to close, backlogs, records that stopped ending, and paused
destinations that have taken an attempt since (a process restarted while its lane was paused
forgets it was). A failure here is logged, never raised into ingest, delivery or a pass.
"""

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.destinations import Destination
from receiver.forward.breaker import LANE_PAUSED, LANE_RESUMED
from receiver.logs import log
from receiver.model import Event
from receiver.operational.events import OperationalEvent, OperationalType
from receiver.periodic import Periodic
from receiver.settings import Settings
from receiver.store.conditions import (
    Backlog,
    Condition,
    conditions_in_progress,
    end_condition,
    first_dead_letters,
    last_successes,
    pending_backlogs,
    start_condition,
    stuck_records,
)
from receiver.store.database import transaction
from receiver.store.deliveries import DEAD_LETTERS
from receiver.store.destination_states import Disabled, disabled_destinations_in
from receiver.store.events import Submission, run_on, store_events

# Dead letters a coalesced event names (with its count of all of them).
FIRST_DEAD_LETTERS = 5
# Stuck records are counted no further: "more than 10,000" is news enough.
STUCK_RECORDS_COUNTED = 10_000
# Raises handed over by the forwarder (breaker changes) waiting to be written: a lane changes
# state at most every second or so, so this many means the database is away; past it a
# change is logged and left (the periodic check still ends a pause that is over).
MAX_WAITING = 64
# On stop, how long raises still being written may take.
STOP_SECONDS = 5.0

CREDITS = "credits"
RIVYA_KEY = "rivya-key"
STUCK_RECORDS = "records"
PAUSED = "paused:"
BACKLOG = "backlog:"
DISABLED = "disabled:"


class Alerts:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        notify: Callable[[OperationalEvent], None] | None = None,
        on_raised: Callable[[str], None] | None = None,
    ) -> None:
        """`notify(event)` tells people (never blocks); `on_raised(type)` counts (the
        metric). The forwarders find the events' deliveries as they find reconciliation's
        (their next poll, or PostgreSQL's notification)."""
        self._engine = engine
        self._settings = settings
        self._destinations: Sequence[Destination] = settings.forwarding
        self._notify = notify
        self._on_raised = on_raised
        self._waiting: set[asyncio.Task[bool]] = set()
        self._checks = Periodic(
            "operational-checks",
            settings.alert_check_seconds,
            self.check,
            "operational_check_failed",
        )

    def reconfigure(self, destinations: Sequence[Destination]) -> None:
        """Store events for, and check the backlogs of, `destinations` from now on (a
        reload)."""
        self._destinations = destinations

    async def __aenter__(self) -> "Alerts":
        self._checks.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._checks.stop()
        if self._waiting:
            _, unfinished = await asyncio.wait(self._waiting, timeout=STOP_SECONDS)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    # What the forwarder and reconciliation hand over.

    def lane_changed(
        self, change: str, destination: str, failures: int, pause_seconds: float
    ) -> None:
        """A breaker paused or reopened `destination`'s lane (LANE_PAUSED or LANE_RESUMED):
        written in the background, the forwarder never waits."""
        now = datetime.now(UTC)
        name = PAUSED + destination
        if change == LANE_PAUSED:
            event = OperationalEvent(
                OperationalType.DESTINATION_PAUSED,
                name,
                now,
                now,
                {
                    "destination": destination,
                    "consecutive_failures": failures,
                    "pause_seconds": pause_seconds,
                },
            )
            self._soon(self.start(event))
        elif change == LANE_RESUMED:
            self._soon(self.end(name, _resumed(destination, now)))

    async def credits_read(self, balance: int) -> None:
        """A balance read from Rivya: low at or under RECEIVER_LOW_CREDITS_THRESHOLD."""
        threshold = self._settings.low_credits_threshold
        if threshold is None:
            # Unset since it was raised: ended quietly, or it could never be raised again.
            await self.end(CREDITS, lambda _: None)
            return
        now = datetime.now(UTC)
        data = {"balance": balance, "threshold": threshold}
        if balance <= threshold:
            await self.start(OperationalEvent(OperationalType.CREDITS_LOW, CREDITS, now, now, data))
        else:
            await self.end(
                CREDITS,
                lambda low: OperationalEvent(
                    OperationalType.CREDITS_RECOVERED, CREDITS, low.started_at, now, data
                ),
            )

    async def key_refused(self, code: str) -> None:
        """Rivya refused the API key (401/403), with its error `code` (never the key)."""
        now = datetime.now(UTC)
        event = OperationalEvent(
            OperationalType.RECONCILE_REFUSED, RIVYA_KEY, now, now, {"code": code}
        )
        await self.start(event, detail=code)

    async def key_accepted(self) -> None:
        now = datetime.now(UTC)
        await self.end(
            RIVYA_KEY,
            lambda refused: OperationalEvent(
                OperationalType.RECONCILE_RESTORED,
                RIVYA_KEY,
                refused.started_at,
                now,
                {"refused_code": refused.detail},
            ),
        )

    # Raising and ending.

    async def start(self, event: OperationalEvent, detail: str | None = None) -> bool:
        """Raise `event`'s condition as of `event.since`, storing `event`, unless it is in
        progress already; whether this process raised it. `detail` is kept for the event
        that ends it."""

        async def work(connection: AsyncConnection) -> OperationalEvent | None:
            raised = await start_condition(connection, event.condition, event.since, detail)
            if not raised:
                return None
            return await self._store(connection, event)

        return await self._decide(work, event.condition)

    async def end(
        self,
        name: str,
        ended: Callable[[Condition], OperationalEvent | None],
        started_at: datetime | None = None,
    ) -> bool:
        """End condition `name` if it is in progress (only the one that started at
        `started_at`, if given: a check ends what it read, not one raised since), storing
        `ended(condition)` (None: ended without an event); whether this process ended it."""

        async def work(connection: AsyncConnection) -> OperationalEvent | None:
            condition = await end_condition(connection, name, started_at)
            if condition is None:
                return None
            event = ended(condition)
            return event if event is None else await self._store(connection, event)

        return await self._decide(work, name)

    async def check(self) -> None:
        """Look at what no one hands over: see the module's doc."""
        now = datetime.now(UTC)
        async with transaction(self._engine) as connection:
            in_progress = {c.name: c for c in await conditions_in_progress(connection)}
            backlogs = await pending_backlogs(connection)
            stuck_before = now - timedelta(seconds=self._settings.alert_stuck_records_seconds)
            stuck = await stuck_records(connection, stuck_before, STUCK_RECORDS_COUNTED)
            successes = await last_successes(connection)
            disabled = await disabled_destinations_in(connection)
        coalesce = timedelta(seconds=self._settings.alert_coalesce_seconds)
        configured = {destination.name for destination in self._destinations}
        for name, condition in in_progress.items():
            if name.startswith(DEAD_LETTERS) and condition.started_at <= now - coalesce:
                await self._close_window(condition, now)
            took = successes.get(_subject(name))
            if name.startswith(PAUSED) and took is not None and took > condition.started_at:
                await self.end(name, _resumed(_subject(name), now), condition.started_at)
            elif name.startswith((PAUSED, BACKLOG)) and _subject(name) not in configured:
                # A destination no longer configured: nothing will end its conditions.
                await self.end(name, lambda _: None, condition.started_at)
        await self._check_disabled(disabled, backlogs, in_progress, now)
        await self._check_backlogs(backlogs, in_progress, now, disabled)
        if stuck is not None and STUCK_RECORDS not in in_progress:
            threshold = self._settings.alert_stuck_records_seconds
            since = stuck.oldest_changed_at + timedelta(seconds=threshold)
            data = {
                "count": stuck.found,
                "oldest_task_id": stuck.oldest_task_id,
                "threshold_seconds": threshold,
            }
            event = OperationalEvent(OperationalType.RECORDS_STUCK, STUCK_RECORDS, since, now, data)
            await self.start(event)
        elif stuck is None and STUCK_RECORDS in in_progress:
            # Raised when stuck records appear; it ends quietly once none are, so that the
            # next ones raise it again.
            await self.end(STUCK_RECORDS, lambda _: None, in_progress[STUCK_RECORDS].started_at)

    async def _check_disabled(
        self,
        disabled: dict[str, Disabled],
        backlogs: dict[str, Backlog],
        in_progress: dict[str, Condition],
        now: datetime,
    ) -> None:
        """Raised for each destination disabled, however (a 410 Gone, an operator, another
        replica), as of when it was, so replicas agree on its ID; ended once it is enabled.
        Disabling is rare and read from the table, so it is looked at here rather than
        handed over by each process that can do it."""
        for name, state in disabled.items():
            if DISABLED + name in in_progress:
                continue
            backlog = backlogs.get(name)
            data = {
                "destination": name,
                "disabled_by": state.disabled_by,
                "reason": state.reason,
                "pending": backlog.pending if backlog else 0,
            }
            event = OperationalEvent(
                OperationalType.DESTINATION_DISABLED, DISABLED + name, state.disabled_at, now, data
            )
            await self.start(event, detail=state.disabled_by)
        for name, condition in in_progress.items():
            if name.startswith(DISABLED) and _subject(name) not in disabled:
                await self.end(name, _enabled(_subject(name), now), condition.started_at)

    async def _check_backlogs(
        self,
        backlogs: dict[str, Backlog],
        in_progress: dict[str, Condition],
        now: datetime,
        disabled: dict[str, Disabled],
    ) -> None:
        threshold = self._settings.alert_backlog_age_seconds
        for destination in self._destinations:
            if destination.name in disabled:
                # Its pending deliveries wait for an operator, not for a forwarder: the
                # disabled event says so, and its backlog is looked at again once enabled.
                continue
            name = BACKLOG + destination.name
            backlog = backlogs.get(destination.name)
            age = (now - backlog.oldest).total_seconds() if backlog else 0.0
            data = {
                "destination": destination.name,
                "pending": backlog.pending if backlog else 0,
                "oldest_age_seconds": round(age),
                "threshold_seconds": threshold,
            }
            if backlog and age >= threshold and name not in in_progress:
                # Since the oldest passed the threshold: replicas agree, and so on its ID.
                since = backlog.oldest + timedelta(seconds=threshold)
                event = OperationalEvent(OperationalType.BACKLOG_STUCK, name, since, now, data)
                await self.start(event)
            elif age < threshold and name in in_progress:
                stuck = in_progress[name].started_at
                await self.end(name, _cleared(name, now, data), stuck)

    async def _close_window(self, window: Condition, now: datetime) -> None:
        destination = _subject(window.name)

        async def work(connection: AsyncConnection) -> OperationalEvent | None:
            closed = await end_condition(connection, window.name, window.started_at)
            if closed is None:
                return None
            first = await first_dead_letters(connection, destination, closed, FIRST_DEAD_LETTERS)
            data = {
                "destination": destination,
                "count": closed.counted,
                "first": [letter._asdict() for letter in first],
            }
            event = OperationalEvent(
                OperationalType.DELIVERY_DEAD, window.name, closed.started_at, now, data
            )
            return await self._store(connection, event)

        await self._decide(work, window.name)

    async def _decide(
        self,
        work: Callable[[AsyncConnection], Coroutine[Any, Any, OperationalEvent | None]],
        condition: str,
    ) -> bool:
        try:
            async with transaction(self._engine) as connection:
                event = await work(connection)
        except Exception as exc:  # noqa: BLE001 - an alert must never fail what raised it
            log.warning("operational_event_failed", what=condition, error_class=type(exc).__name__)
            return False
        if event is None:
            return False
        log.warning("operational_event", event_type=event.type.value, event_id=event.event_id)
        if self._on_raised is not None:
            self._on_raised(event.type.value)
        if self._notify is not None:
            self._notify(event)
        return True

    async def _store(
        self, connection: AsyncConnection, event: OperationalEvent
    ) -> OperationalEvent | None:
        """Store `event`, forwarded to the destinations that name it; None if it was stored
        before (the same condition raised again with the same start): nothing to tell."""
        submission = Submission(
            Event(event.event_id, event.type.value, None, event.at),
            event.event_id,
            event.body(),
            event.at,
        )
        destinations = self._destinations
        (outcome,) = await connection.run_sync(
            lambda sync: store_events(run_on(sync), sync.dialect, [submission], destinations)
        )
        return None if outcome is None else event

    def _soon(self, raising: Coroutine[Any, Any, bool]) -> None:
        if len(self._waiting) >= MAX_WAITING:
            raising.close()
            log.warning("operational_event_dropped", reason="too_many_waiting")
            return
        task = asyncio.create_task(raising)
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)


def _resumed(destination: str, now: datetime) -> Callable[[Condition], OperationalEvent]:
    def event(paused: Condition) -> OperationalEvent:
        since = paused.started_at
        data = {
            "destination": destination,
            "paused_seconds": round((now - since).total_seconds(), 1),
        }
        return OperationalEvent(
            OperationalType.DESTINATION_RESUMED, PAUSED + destination, since, now, data
        )

    return event


def _enabled(destination: str, now: datetime) -> Callable[[Condition], OperationalEvent]:
    def event(disabled: Condition) -> OperationalEvent:
        since = disabled.started_at
        data = {
            "destination": destination,
            "disabled_by": disabled.detail,
            "disabled_seconds": round((now - since).total_seconds(), 1),
        }
        return OperationalEvent(
            OperationalType.DESTINATION_ENABLED, DISABLED + destination, since, now, data
        )

    return event


def _cleared(
    name: str, now: datetime, data: dict[str, Any]
) -> Callable[[Condition], OperationalEvent]:
    def event(stuck: Condition) -> OperationalEvent:
        return OperationalEvent(OperationalType.BACKLOG_CLEARED, name, stuck.started_at, now, data)

    return event


def _subject(name: str) -> str:
    """The destination a condition's name is about: `paused:billing` is billing's."""
    return name.partition(":")[2]
