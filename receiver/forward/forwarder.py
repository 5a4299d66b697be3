"""Delivering stored events to their destinations: claim what is due, send it, record what
happened.

Each destination has a lane of its own (`forward.lanes`): up to its `max_in_flight` attempts
in flight, each a task, and as many claimed deliveries waiting in memory, so that a freed
slot starts its next attempt at once, not after a transaction. A destination that hangs or
refuses everything fills only its own lane; the others' claims and attempts go on beside it.
After enough failures in a row its lane is paused, then probed one attempt at a time (see
`breaker`), so it does not take the others' CPU and writes either. One loop owns the
database: in one transaction it writes the outcomes of the attempts that finished since its
last (releasing each lease) and claims more due deliveries for every lane with room, under a
lease (so no other forwarder sends them). An outcome whose delivery was deleted while its
attempt was in flight, or that the database refuses for another reason than its absence
(then each outcome is tried alone), is logged and dropped: it can never be written, and must
not hold up the transaction every other outcome and claim shares. Deliveries of a
destination no longer configured are never claimed: they wait, orphaned, until it is back,
or until retention dead-letters them (see `store.retention`).

The loop wakes when an attempt finishes, when this process stores an event, on PostgreSQL
when any process queues deliveries (LISTEN/NOTIFY), and otherwise every
`RECEIVER_FORWARD_POLL_SECONDS`, which is how work queued by another process is found on
SQLite, and retries that come due.

At-least-once: an attempt whose outcome was not written (a crash, a lost database) is sent
again once its lease expires. The downstream deduplicates by `webhook-id`, the event ID.
"""

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

import aiohttp
from opentelemetry.trace import Span, Tracer
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.destinations import Destination
from receiver.forward.lanes import Lane
from receiver.forward.retries import RetryPolicy
from receiver.forward.sending import post, signed_headers
from receiver.forward.spans import attempt_span, record_outcome
from receiver.logs import log
from receiver.outbound import open_session
from receiver.settings import Settings
from receiver.store.connections import (
    DATABASE_ERRORS,
    Transaction,
    WriteConnection,
    open_write_connection,
)
from receiver.store.database import database_unavailable
from receiver.store.deliveries import (
    AttemptRecord,
    ClaimedDelivery,
    DeliveryState,
    claim_due_deliveries,
    disable_gone_destinations,
    disabled_names,
    gone_from_destination,
    record_attempts,
    release_claims,
)
from receiver.store.statements import Run
from receiver.tracing.carriers import headers_for

# After a failed write of outcomes, the pause before trying again.
WRITE_RETRY_SECONDS = 0.5
# Where PostgreSQL announces queued deliveries (migration 0004 sends it).
DELIVERIES_CHANNEL = "receiver_deliveries"
# The least time between two reads of the disabled state for a lane holding claims it
# cannot start (it wants no more, so nothing else brings a transaction): a disable is obeyed
# within this of its NOTIFY, or within the poll on SQLite. Each read is a transaction (the
# write lock, on SQLite), and stored events wake the loop many times a second.
HELD_READ_SECONDS = 0.1
T = TypeVar("T")


class _Exchanged(NamedTuple):
    """What one claiming transaction did."""

    gone: list[AttemptRecord]
    newly_disabled: list[str]
    disabled: frozenset[str]
    claimed: dict[str, list[ClaimedDelivery]]


class Forwarder:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        on_attempt: Callable[[str, int | None, str | None, float], None] | None = None,
        tracer: Tracer | None = None,
        on_lane_change: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        """`on_attempt(destination, status_code, error_class, seconds)` is told of every
        attempt (the metrics), within its span; `tracer`: a client span for each attempt, a
        child of the span that stored its event (see `forward.spans`);
        `on_lane_change(change, destination, failures, pause_seconds)` of every pause and
        reopening of a lane (the operational events), without waiting."""
        if not settings.forwarding:
            raise ValueError("forwarding needs a destination")
        self._engine = engine
        self._on_attempt = on_attempt
        self._on_lane_change = on_lane_change
        self._tracer = tracer
        self._lanes = {d.name: Lane(d) for d in settings.forwarding}
        # A reloaded configuration, taken between two claiming transactions.
        self._reloaded: tuple[Destination, ...] | None = None
        # Lanes removed by a reload while attempts were in flight, by name.
        self._retired: dict[str, Lane] = {}
        self._policy = RetryPolicy(settings.forward_retry_schedule)
        self._timeout = settings.forward_timeout_seconds
        self._lease_seconds = settings.forward_lease_seconds
        self._poll_seconds = settings.forward_poll_seconds
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._busy_timeout_seconds = settings.database_busy_timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        # Claims and outcomes are written the way ingest writes (see store.connections).
        self._database: WriteConnection | None = None
        self._wakeup = asyncio.Event()
        # When a lane holding claims may read the state next, and whether a NOTIFY came
        # (it may have disabled one) since the last claiming transaction.
        self._held_read_at = 0.0
        self._notified = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._abandoned: list[int] = []
        self._finished: list[AttemptRecord] = []
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None
        self._log = log
        self._listener: AsyncConnection | None = None

    def wake(self) -> None:
        self._wakeup.set()

    def reconfigure(self, destinations: tuple[Destination, ...]) -> None:
        """Forward to `destinations` from the next claim on (a reload): lanes are added,
        removed (their claims handed back, their attempts in flight left to finish) and
        resized, and secrets rotated."""
        self._reloaded = destinations
        self._wakeup.set()

    def _apply_reload(self) -> None:
        destinations, self._reloaded = self._reloaded, None
        if destinations is None:
            return
        now = time.monotonic()
        lanes: dict[str, Lane] = {}
        for destination in destinations:
            # A lane removed by an earlier reload whose attempts are still in flight is taken
            # back, not made anew: its width, rate and breaker count what it has in flight.
            lane = self._lanes.pop(destination.name, None) or self._retired.pop(
                destination.name, None
            )
            if lane is None:
                lane = Lane(destination)
            else:
                lane.reconfigure(destination, now)
            lanes[destination.name] = lane
        for name, removed in self._lanes.items():
            self._abandoned.extend(delivery.id for _, delivery in removed.claimed)
            removed.claimed.clear()
            if removed.in_flight:
                self._retired[name] = removed
        self._retired = {n: lane for n, lane in self._retired.items() if lane.in_flight}
        self._lanes = lanes

    async def __aenter__(self) -> "Forwarder":
        # No cap of the session's own: each lane caps its attempts in flight, and a lane
        # must never wait for a connection another lane's hanging attempts hold, however
        # a reload resizes them. So at most the sum of the lanes' `max_in_flight` (and,
        # for a lane just removed, its attempts still in flight).
        self._session = open_session(self._timeout, connections=0)
        self._database = open_write_connection(self._engine, self._busy_timeout_seconds)
        if self._engine.dialect.name == "postgresql":
            self._listener = await self._listen()
        # Bound once, after logging is configured: the module's lazy proxy builds a new
        # logger on every call, which costs as much as the line itself.
        self._log = log.bind()
        self._loop = asyncio.create_task(self._database_loop(), name="forwarder")
        log.info(
            "forwarder_started",
            concurrency=sum(lane.destination.max_in_flight for lane in self._lanes.values()),
            destinations=len(self._lanes),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Stop claiming, let attempts in flight finish within their timeout, hand back
        # the claims of any that did not or never started, and write every outcome.
        self._stopping = True
        self._wakeup.set()
        if self._in_flight:
            _, unfinished = await asyncio.wait(self._in_flight, timeout=self._timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        self._wakeup.set()
        if self._loop is not None:
            await self._loop
        for lane in self._lanes.values():
            self._abandoned.extend(delivery.id for _, delivery in lane.claimed)
            lane.claimed.clear()
        if self._abandoned:
            await self._transact(
                lambda run, dialect: release_claims(run, dialect, self._owner, self._abandoned)
            )
        if self._listener is not None:
            await self._listener.close()
        if self._database is not None:
            await self._database.close()
        if self._session is not None:
            await self._session.close()
        log.info("forwarder_stopped", count=len(self._abandoned))

    async def _listen(self) -> AsyncConnection | None:
        """A connection of its own that LISTENs for deliveries queued by any process, so
        they are claimed at once rather than at the next poll. Without it (it failed, or
        the connection drops later), polling still finds everything."""
        try:
            connection = await self._engine.connect()
            driver = (await connection.get_raw_connection()).driver_connection  # asyncpg's
            if driver is None:  # only for a connection already closed
                await connection.close()
                return None
            await driver.add_listener(DELIVERIES_CHANNEL, self._on_notify)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("listen_failed", exc_info=exc)
            return None
        return connection

    def _on_notify(self, *_: object) -> None:
        self._notified = True
        self._wakeup.set()

    async def _database_loop(self) -> None:
        while not (self._stopping and not self._in_flight and not self._finished):
            self._wakeup.clear()
            self._apply_reload()
            finished, self._finished = self._finished, []
            released, self._abandoned = self._abandoned, []
            lanes = {} if self._stopping else self._lanes
            # Taken before the transaction, as the lease's own start is.
            claimed_at = time.monotonic()
            wanted = {name: n for name, lane in lanes.items() if (n := lane.wanted(claimed_at))}
            # A lane holding claims reads the state though it wants no more: else a full lane
            # ran no transaction until a slot freed, and then started what it held first,
            # however long before a disable (notified or polled) was committed.
            holding = any(lane.claimed for lane in lanes.values())
            read_held = holding and claimed_at >= self._held_read_at
            claimed: list[ClaimedDelivery] = []
            if finished or released or wanted or read_held:
                try:
                    claimed = await self._exchange(finished, released, wanted)
                    self._held_read_at = time.monotonic() + HELD_READ_SECONDS
                    self._notified = False
                except DATABASE_ERRORS as exc:
                    log.warning("forwarder_write_failed", count=len(finished), exc_info=exc)
                    if self._stopping:
                        return  # their leases expire and the deliveries are sent again
                    if finished and not database_unavailable(exc):
                        finished = await self._write_alone(finished)
                    self._finished[:0] = finished
                    self._abandoned[:0] = released
                    await asyncio.sleep(WRITE_RETRY_SECONDS)
                    continue
            # Past this a waiting claim is handed back rather than started: an attempt must
            # end, and its outcome be written, while the lease is still ours. Waiting may use
            # half of what the lease allows beyond the timeout; the rest is the writing's.
            start_by = claimed_at + (self._lease_seconds - self._timeout) / 2
            for delivery in claimed:
                self._lanes[delivery.destination].claimed.append((start_by, delivery))
            for lane in self._lanes.values():
                self._start_attempts(lane)
            if not claimed and not self._finished:
                idle = self._idle_seconds()
                if holding and self._notified:  # read at HELD_READ_SECONDS, not the poll
                    idle = min(idle, max(0.0, self._held_read_at - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), idle)

    def _idle_seconds(self) -> float:
        """How long the loop may wait for news: until the next poll, or sooner, until a
        lane held back by its rate may start its next attempt."""
        now = time.monotonic()
        # Stopping, nothing is claimed: only attempts ending (which wake it) matter.
        lanes = () if self._stopping else self._lanes.values()
        waits = [w for lane in lanes if (w := lane.rate_wait(now)) is not None]
        return min([self._poll_seconds, *waits])

    async def _exchange(
        self, finished: list[AttemptRecord], released: list[int], wanted: dict[str, int]
    ) -> list[ClaimedDelivery]:
        """Write `finished`, hand back `released` and claim up to `wanted` more of each
        destination, in one transaction."""

        def work(run: Run, dialect: Dialect) -> _Exchanged:
            now = datetime.now(UTC)
            gone, newly_disabled = self._record(run, dialect, finished, now)
            release_claims(run, dialect, self._owner, released)
            # Read in the transaction that claims: a destination disabled by any process
            # claims nothing from the moment that was committed.
            disabled = disabled_names(run, dialect)
            claimed = {
                name: claim_due_deliveries(
                    run, dialect, self._owner, name, limit, self._lease_seconds, now
                )
                for name, limit in wanted.items()
                if name not in disabled
            }
            return _Exchanged(gone, newly_disabled, disabled, claimed)

        exchanged = await self._transact(work)
        # Logged once committed, so once: a failed transaction is tried again, whole.
        self._after_recording(exchanged.gone, exchanged.newly_disabled)
        # A 410 not yet written keeps its lane disabled: this transaction read the state
        # without it.
        unwritten = {r.destination for r in self._finished if gone_from_destination(r)}
        for name, lane in self._lanes.items():
            lane.disabled = name in exchanged.disabled or name in unwritten
        for name, claims in exchanged.claimed.items():
            self._lanes[name].more_due = len(claims) == wanted[name]
        return [delivery for claims in exchanged.claimed.values() for delivery in claims]

    def _record(
        self, run: Run, dialect: Dialect, finished: list[AttemptRecord], now: datetime
    ) -> tuple[list[AttemptRecord], list[str]]:
        """Write `finished`, and disable the destinations that answered one of them 410
        Gone: which attempts could not be written (their delivery is gone), and which
        destinations this transaction disabled."""
        gone = record_attempts(run, dialect, self._owner, finished, now)
        return gone, disable_gone_destinations(run, dialect, finished, now)

    def _after_recording(self, gone: list[AttemptRecord], newly_disabled: list[str]) -> None:
        for record in gone:
            self._drop(record, "delivery_gone")
        for name in newly_disabled:
            # The operational event is raised by the alerts' next check, which sees every
            # disabled destination, however it was disabled.
            self._log.warning("destination_disabled", destination=name, reason="410 Gone")

    async def _write_alone(self, finished: list[AttemptRecord]) -> list[AttemptRecord]:
        """After a failure that is not the database's absence: write each of `finished` in a
        transaction of its own, so that one the database refuses for good (a constraint, a
        trigger, a value it cannot hold) is dropped, not retried for ever in front of the
        others. A dropped attempt loses only its line in the log of attempts: its delivery
        keeps its lease, which expires, and it is sent again. What is returned was not
        written because the database went away meanwhile: it is tried again, whole."""
        for index, record in enumerate(finished):
            try:
                gone, disabled = await self._transact(functools.partial(self._record_alone, record))
            except DATABASE_ERRORS as exc:
                if database_unavailable(exc):
                    return finished[index:]
                self._drop(record, "refused", error_class=type(exc).__name__)
            else:
                self._after_recording(gone, disabled)
        return []

    def _record_alone(
        self, record: AttemptRecord, run: Run, dialect: Dialect
    ) -> tuple[list[AttemptRecord], list[str]]:
        # The clock is read in the transaction, once it holds the write lock (on SQLite):
        # `finished_at` is then as close to the commit as this process can tell.
        return self._record(run, dialect, [record], datetime.now(UTC))

    def _drop(self, record: AttemptRecord, reason: str, error_class: str | None = None) -> None:
        self._log.warning(
            "delivery_outcome_dropped",
            reason=reason,
            delivery_id=record.delivery_id,
            destination=record.destination,
            event_id=record.event_id,
            attempt=record.attempt,
            delivery_state=record.state,
            error_class=error_class,
        )

    def _start_attempts(self, lane: Lane) -> None:
        # Claims too old to start are handed back even while the lane is full (its
        # destination hanging), before their lease runs out in memory; and all of them
        # once the lane is paused.
        now = time.monotonic()
        slots = 0 if lane.disabled else lane.slots(now)
        while lane.claimed and (slots == 0 or lane.claimed[0][0] < now):
            self._abandoned.append(lane.claimed.popleft()[1].id)
        while lane.claimed and lane.in_flight < slots:
            if self._stopping:
                return
            if lane.bucket is not None and not lane.bucket.take(now):
                return  # the loop wakes when the next token comes (`_idle_seconds`)
            _, delivery = lane.claimed.popleft()
            lane.in_flight += 1
            task = asyncio.create_task(self._attempt(lane, delivery))
            self._in_flight.add(task)
            task.add_done_callback(lambda done: self._on_attempt_done(done, lane))

    def _on_attempt_done(self, task: asyncio.Task[None], lane: Lane) -> None:
        self._in_flight.discard(task)
        lane.in_flight -= 1
        self._start_attempts(lane)
        self._wakeup.set()

    async def _attempt(self, lane: Lane, delivery: ClaimedDelivery) -> None:
        if self._tracer is None:
            await self._send(lane, delivery, None)
            return
        with attempt_span(self._tracer, lane.destination, delivery) as span:
            await self._send(lane, delivery, span)

    async def _send(self, lane: Lane, delivery: ClaimedDelivery, span: Span | None) -> None:
        destination = lane.destination
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error_class: str | None = None
        retry_after: str | None = None
        headers = signed_headers(destination, delivery.event_id, delivery.body)
        if span is not None:
            headers.update(headers_for(span))
        if self._session is None:
            raise RuntimeError("the forwarder is used outside its context")
        try:
            async with post(
                self._session, delivery.target_url or destination.url, delivery.body, headers
            ) as response:
                status_code = response.status
                retry_after = response.headers.get("retry-after")
        except asyncio.CancelledError:
            self._abandoned.append(delivery.id)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, it is this attempt's outcome
            error_class = type(exc).__name__
        seconds = time.perf_counter() - started
        duration_ms = round(seconds * 1000, 2)
        if self._on_attempt is not None:
            self._on_attempt(destination.name, status_code, error_class, seconds)
        attempt = delivery.attempts_made + 1
        verdict = self._policy.judge(attempt, status_code, retry_after, datetime.now(UTC))
        record_outcome(span, status_code, error_class, verdict.state)
        # The last attempt of a delivery that goes dead needs an operator: a warning.
        dead = verdict.state is DeliveryState.DEAD
        (self._log.warning if dead else self._log.info)(
            "delivery_attempt",
            delivery_id=delivery.id,
            destination=destination.name,
            event_id=delivery.event_id,
            attempt=attempt,
            http_status=status_code,
            error_class=error_class,
            duration_ms=duration_ms,
            delivery_state=verdict.state,
        )
        record = AttemptRecord(
            delivery_id=delivery.id,
            destination=destination.name,
            event_id=delivery.event_id,
            target_url=delivery.target_url,
            attempt=attempt,
            attempted_at=attempted_at,
            duration_ms=duration_ms,
            status_code=status_code,
            error_class=error_class,
            state=verdict.state,
            next_attempt_at=verdict.next_attempt_at,
        )
        if gone_from_destination(record):
            # Nothing more starts from this moment; the database learns it with this
            # attempt's outcome, and every other forwarder from its next claim.
            lane.disabled = True
        delivered = verdict.state is DeliveryState.DELIVERED
        if change := lane.breaker.record(delivered, time.monotonic()):
            breaker = lane.breaker
            self._log.warning(
                change,
                destination=destination.name,
                failures=breaker.failures_in_a_row,
                pause_seconds=breaker.pause_seconds,
            )
            if self._on_lane_change is not None:
                self._on_lane_change(
                    change, destination.name, breaker.failures_in_a_row, breaker.pause_seconds
                )
        self._finished.append(record)

    async def _transact(self, work: Transaction[T]) -> T:
        if self._database is None:
            raise RuntimeError("the forwarder is used outside its context")
        return await self._database.transact(work)
