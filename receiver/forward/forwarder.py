"""Delivering stored events downstream: claim what is due, send it, record what happened.

Up to `concurrency` attempts are in flight, each a task. One loop owns the database: in one
transaction it writes the outcomes of the attempts that finished since its last (releasing
each lease) and claims more due deliveries under a lease (so no other forwarder sends them),
enough that up to `concurrency` more wait in memory: a freed slot starts its next attempt at
once, not after a transaction. The loop wakes when an attempt finishes, when this process
stores an event, on PostgreSQL when any process queues deliveries (LISTEN/NOTIFY), and
otherwise every `RECEIVER_FORWARD_POLL_SECONDS`, which is how work queued by another process
is found on SQLite, and retries that come due.

At-least-once: an attempt whose outcome was not written (a crash, a lost database) is sent
again once its lease expires. The downstream deduplicates by `webhook-id`, the event ID.
"""

import asyncio
import collections
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.forward.retries import RetryPolicy
from receiver.logs import log
from receiver.outbound import open_session
from receiver.settings import Settings
from receiver.signatures import sign_headers
from receiver.store.connections import (
    DATABASE_ERRORS,
    Transaction,
    WriteConnection,
    open_write_connection,
)
from receiver.store.deliveries import (
    AttemptRecord,
    ClaimedDelivery,
    claim_due_deliveries,
    record_attempts,
    release_claims,
)
from receiver.store.statements import Run

# After a failed write of outcomes, the pause before trying again.
WRITE_RETRY_SECONDS = 0.5
# Where PostgreSQL announces queued deliveries (migration 0004 sends it).
DELIVERIES_CHANNEL = "receiver_deliveries"
T = TypeVar("T")


class Forwarder:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        on_attempt: Callable[[int | None, str | None], None] | None = None,
    ) -> None:
        """`on_attempt(status_code, error_class)` is told of every attempt (the metrics)."""
        if settings.forward_url is None or not settings.forward_signing_secrets:
            raise ValueError("forwarding needs a URL and a signing secret")
        self._engine = engine
        self._on_attempt = on_attempt
        self._url = settings.forward_url
        self._secrets = settings.forward_signing_secrets
        self._policy = RetryPolicy(settings.forward_retry_schedule)
        self._timeout = settings.forward_timeout_seconds
        self._concurrency = settings.forward_concurrency
        self._lease_seconds = settings.forward_lease_seconds
        self._poll_seconds = settings.forward_poll_seconds
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._busy_timeout_seconds = settings.database_busy_timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        # Claims and outcomes are written the way ingest writes (see store.connections).
        self._database: WriteConnection | None = None
        self._wakeup = asyncio.Event()
        self._claimed: collections.deque[tuple[float, ClaimedDelivery]] = collections.deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._abandoned: list[int] = []
        self._finished: list[AttemptRecord] = []
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None
        self._log = log
        self._listener: AsyncConnection | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def __aenter__(self) -> "Forwarder":
        self._session = open_session(self._timeout, self._concurrency)
        self._database = open_write_connection(self._engine, self._busy_timeout_seconds)
        if self._engine.dialect.name == "postgresql":
            self._listener = await self._listen()
        # Bound once, after logging is configured: the module's lazy proxy builds a new
        # logger on every call, which costs as much as the line itself.
        self._log = log.bind()
        self._loop = asyncio.create_task(self._database_loop(), name="forwarder")
        log.info("forwarder_started", concurrency=self._concurrency)
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
        self._abandoned.extend(delivery.id for _, delivery in self._claimed)
        if self._abandoned:
            await self._transact(
                lambda run, dialect: release_claims(run, dialect, self._owner, self._abandoned)
            )
        if self._listener is not None:
            await self._listener.close()
        if self._database is not None:
            self._database.close()
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
        self._wakeup.set()

    async def _database_loop(self) -> None:
        while not (self._stopping and not self._in_flight and not self._finished):
            self._wakeup.clear()
            finished, self._finished = self._finished, []
            released, self._abandoned = self._abandoned, []
            wanted = 2 * self._concurrency - len(self._in_flight) - len(self._claimed)
            # Refill in batches: one claim per freed slot would be a transaction each.
            if self._stopping or wanted < self._concurrency // 2:
                wanted = 0
            claimed: list[ClaimedDelivery] = []
            # Taken before the transaction, as the lease's own start is.
            claimed_at = time.monotonic()
            if finished or released or wanted:
                try:
                    claimed = await self._exchange(finished, released, wanted)
                except DATABASE_ERRORS as exc:
                    log.warning("forwarder_write_failed", count=len(finished), exc_info=exc)
                    if self._stopping:
                        return  # their leases expire and the deliveries are sent again
                    self._finished[:0] = finished
                    self._abandoned[:0] = released
                    await asyncio.sleep(WRITE_RETRY_SECONDS)
                    continue
            # Past this a waiting claim is handed back rather than started: an attempt must
            # end, and its outcome be written, while the lease is still ours. Waiting may use
            # half of what the lease allows beyond the timeout; the rest is the writing's.
            start_by = claimed_at + (self._lease_seconds - self._timeout) / 2
            self._claimed.extend((start_by, delivery) for delivery in claimed)
            self._start_attempts()
            if not claimed and not self._finished:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)

    async def _exchange(
        self, finished: list[AttemptRecord], released: list[int], wanted: int
    ) -> list[ClaimedDelivery]:
        """Write `finished`, hand back `released` and claim up to `wanted` more, in one
        transaction."""
        now = datetime.now(UTC)

        def work(run: Run, dialect: Dialect) -> list[ClaimedDelivery]:
            record_attempts(run, dialect, self._owner, finished)
            release_claims(run, dialect, self._owner, released)
            if not wanted:
                return []
            return claim_due_deliveries(run, dialect, self._owner, wanted, self._lease_seconds, now)

        return await self._transact(work)

    def _start_attempts(self) -> None:
        while self._claimed and len(self._in_flight) < self._concurrency and not self._stopping:
            start_by, delivery = self._claimed.popleft()
            if time.monotonic() > start_by:
                self._abandoned.append(delivery.id)
                continue
            task = asyncio.create_task(self._attempt(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._on_attempt_done)

    def _on_attempt_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start_attempts()
        self._wakeup.set()

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error_class: str | None = None
        retry_after: str | None = None
        headers = sign_headers(self._secrets, delivery.event_id, delivery.body)
        headers["content-type"] = "application/json"
        if self._session is None:
            raise RuntimeError("the forwarder is used outside its context")
        try:
            async with self._session.post(
                delivery.target_url or self._url,
                data=delivery.body,
                headers=headers,
                allow_redirects=False,
            ) as response:
                status_code = response.status
                retry_after = response.headers.get("retry-after")
        except asyncio.CancelledError:
            self._abandoned.append(delivery.id)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, it is this attempt's outcome
            error_class = type(exc).__name__
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if self._on_attempt is not None:
            self._on_attempt(status_code, error_class)
        attempt = delivery.attempts_made + 1
        verdict = self._policy.judge(attempt, status_code, retry_after, datetime.now(UTC))
        self._log.info(
            "delivery_attempt",
            delivery_id=delivery.id,
            event_id=delivery.event_id,
            attempt=attempt,
            http_status=status_code,
            error_class=error_class,
            duration_ms=duration_ms,
            delivery_state=verdict.state,
        )
        self._finished.append(
            AttemptRecord(
                delivery_id=delivery.id,
                attempt=attempt,
                attempted_at=attempted_at,
                duration_ms=duration_ms,
                status_code=status_code,
                error_class=error_class,
                state=verdict.state,
                next_attempt_at=verdict.next_attempt_at,
            )
        )

    async def _transact(self, work: Transaction[T]) -> T:
        if self._database is None:
            raise RuntimeError("the forwarder is used outside its context")
        return await self._database.transact(work)
