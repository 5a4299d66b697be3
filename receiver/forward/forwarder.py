"""Delivering stored events downstream: claim what is due, send it, record what happened.

One loop keeps up to `concurrency` attempts in flight. It claims due deliveries from the
database under a lease (so no other forwarder sends them), and runs each attempt as a task.
A recorder writes finished attempts in batches, one transaction for many, releasing each
lease with its outcome. The loop wakes when this process stores an event, when half the
slots are free, on PostgreSQL when any process queues deliveries (LISTEN/NOTIFY), and
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
        # One of this process's transactions at a time: on SQLite a second writer would
        # wait for the lock in SQLite's busy loop, which sleeps in steps of milliseconds.
        self._database_write = asyncio.Lock()
        self._abandoned: list[int] = []
        self._finished: list[AttemptRecord] = []
        self._finished_ready = asyncio.Event()
        self._stopping = False
        self._claimer: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._listener: AsyncConnection | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def __aenter__(self) -> "Forwarder":
        self._session = open_session(self._timeout, self._concurrency)
        self._database = open_write_connection(self._engine, self._busy_timeout_seconds)
        if self._engine.dialect.name == "postgresql":
            self._listener = await self._listen()
        self._claimer = asyncio.create_task(self._claim_loop(), name="forwarder-claims")
        self._recorder = asyncio.create_task(self._record_loop(), name="forwarder-records")
        log.info("forwarder_started", concurrency=self._concurrency)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Stop claiming, let attempts in flight finish within their timeout, hand back
        # the claims of any that did not, and write every outcome before leaving.
        self._stopping = True
        self._wakeup.set()
        if self._claimer is not None:
            await self._claimer
        if self._in_flight:
            _, unfinished = await asyncio.wait(self._in_flight, timeout=self._timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        self._finished_ready.set()
        if self._recorder is not None:
            await self._recorder
        if self._abandoned:
            await self._write(release_claims, self._abandoned)
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

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            # Claimed ahead: up to `concurrency` deliveries wait in memory, so a freed slot
            # starts its next attempt at once rather than after a transaction.
            wanted = 2 * self._concurrency - len(self._in_flight) - len(self._claimed)
            claimed = await self._claim(wanted) if wanted >= self._concurrency // 2 else []
            deadline = time.monotonic() + self._lease_seconds
            self._claimed.extend((deadline, delivery) for delivery in claimed)
            self._start_attempts()
            if not claimed or len(self._claimed) >= self._concurrency:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
        self._abandoned.extend(delivery.id for _, delivery in self._claimed)
        self._claimed.clear()

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        now = datetime.now(UTC)
        try:
            async with self._database_write:
                return await self._transact(
                    lambda run, dialect: claim_due_deliveries(
                        run, dialect, self._owner, limit, self._lease_seconds, now
                    )
                )
        except DATABASE_ERRORS as exc:
            log.warning("claim_failed", exc_info=exc)
            return []

    def _start_attempts(self) -> None:
        while self._claimed and len(self._in_flight) < self._concurrency and not self._stopping:
            deadline, delivery = self._claimed.popleft()
            if deadline - time.monotonic() < self._timeout:
                # Its lease could end mid-attempt, and another forwarder may take it then.
                self._abandoned.append(delivery.id)
                continue
            task = asyncio.create_task(self._attempt(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._on_attempt_done)

    def _on_attempt_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start_attempts()
        # Refill in batches: one claim per freed slot would be one transaction per attempt.
        if len(self._claimed) <= self._concurrency // 2:
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
        log.info(
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
        self._finished_ready.set()

    async def _record_loop(self) -> None:
        while True:
            await self._finished_ready.wait()
            self._finished_ready.clear()
            batch, self._finished = self._finished, []
            if batch and not await self._write(record_attempts, batch):
                if self._stopping:
                    return  # their leases expire and the deliveries are sent again
                self._finished[:0] = batch
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                self._finished_ready.set()
            if self._stopping and not self._in_flight and not self._finished:
                return

    async def _transact(self, work: Transaction[T]) -> T:
        if self._database is None:
            raise RuntimeError("the forwarder is used outside its context")
        return await self._database.transact(work)

    async def _write(
        self, operation: Callable[[Run, Dialect, str, list[T]], None], items: list[T]
    ) -> bool:
        try:
            async with self._database_write:
                await self._transact(
                    lambda run, dialect: operation(run, dialect, self._owner, items)
                )
        except DATABASE_ERRORS as exc:
            log.warning("forwarder_write_failed", count=len(items), exc_info=exc)
            return False
        return True
