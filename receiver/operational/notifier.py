"""Messages to people about operational events, sent through Apprise off the hot path.

`send(event)` only queues the event (bounded: when the queue is full the message is dropped,
counted and logged), so whoever raised it, ingest or a forwarder, never waits for a chat
service. One task sends the queued messages one by one; each message goes to every URL at
once, each URL tried 1 + len(RETRY_DELAYS) times. Apprise is synchronous (requests), so each
try runs in a daemon thread of its own: a hanging service holds only that thread, never the
loop, and never the process's exit (the loop's default executor and Apprise's own pool are
waited for at exit; a daemon thread is not: see `load_service`). Each URL's final result is
counted (`on_result`: sent, failed, dropped; the worker serves no /metrics and passes none)
and logged by its position and scheme, never its text: a notification URL is a secret.

A try is bounded by Apprise's own socket timeouts (4 s to connect and 4 s per read unless
the URL's `cto`/`rto` say otherwise; mailto's connect is 15 s) and, for a service that
trickles its answer a byte at a time inside those, by ATTEMPT_SECONDS, after which the try
counts as failed and its thread is left to end with its socket. Such a thread lives as long
as the service keeps trickling, so a URL whose last try's thread is still alive fails its next
try at once (`Busy`) without starting another: at most one live thread per URL, so at most
MAX_NOTIFY_URLS (20) in all, however many messages a trickling service is sent.
"""

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Self, TypeVar

import structlog
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.operational.apprise_urls import load_service, scheme_of
from receiver.operational.events import OperationalEvent
from receiver.operational.messages import Message, message_for, test_message
from receiver.store.database import transaction
from receiver.store.notifications import record_notification

if TYPE_CHECKING:
    import apprise

SENT = "sent"
FAILED = "failed"
DROPPED = "dropped"
NOTIFICATION_RESULTS = (SENT, FAILED, DROPPED)
BUSY = "Busy"
# An outage raises a handful of events per destination (coalesced dead letters, a pause, a
# stuck backlog); a hundred waiting means the services are down or refusing, and more would
# only hold memory for messages nobody will read in order.
QUEUE_SIZE = 100
# A chat service's brief refusal (a 429, a restart) is over within seconds; three tries,
# 1 s then 4 s apart, ride one out without holding the queue behind a service that is down.
RETRY_DELAYS = (1.0, 4.0)
# Above every default of Apprise's own timeouts (mailto's 15 s connect and a few SMTP
# round trips): only a service that keeps a try alive past its socket timeouts reaches it.
ATTEMPT_SECONDS = 60.0
# A stopping process waits this long for queued messages, then drops the rest: a
# deployment's grace period (Kubernetes': 30 s) must still cover the database's close.
STOP_SECONDS = 5.0
# record(event, message, delivered, failed): whatever it raises is logged, never raised.
RecordNotification = Callable[[OperationalEvent, Message, int, int], Awaitable[None]]
T = TypeVar("T")

log = structlog.get_logger("receiver.notify")


@dataclass(frozen=True, slots=True)
class Pacing:
    """The notifier's waits: between tries, for one try, and at stop."""

    retry_delays: tuple[float, ...] = RETRY_DELAYS
    attempt_seconds: float = ATTEMPT_SECONDS
    stop_seconds: float = STOP_SECONDS


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """One URL's answer to a message: its position (1 first) and scheme, never its text."""

    position: int
    scheme: str
    ok: bool
    # Why not: TimeoutError (no answer within the try's bound), Busy (the URL's last try is
    # still running in its thread, past its bound), NotDelivered (Apprise reports the service
    # refused it or could not be reached), or an exception's class.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Target:
    position: int
    scheme: str
    sender: "apprise.Apprise"


class Notifier:
    def __init__(
        self,
        urls: Sequence[SecretStr],
        public_url: str | None,
        on_result: Callable[[str], None] | None = None,
        record: RecordNotification | None = None,
        pacing: Pacing = Pacing(),
    ) -> None:
        """`urls` as Settings checked them; `on_result(result)` once per URL and message
        (None: not counted); `record(event, message, delivered, failed)` after each message
        has its results."""
        self._targets = [
            _Target(position, scheme_of(url.get_secret_value()), sender)
            for position, url in enumerate(urls, start=1)
            if (sender := load_service(url.get_secret_value())) is not None
        ]
        self._public_url = public_url
        self._on_result = on_result
        self._record = record
        self._pacing = pacing
        self._queue: asyncio.Queue[OperationalEvent] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        # By position, set once the URL's last try returned in its thread: until then, the
        # URL's tries fail as Busy (a thread returns before its result reaches the loop, so a
        # try that got its answer never leaves the next one Busy).
        self._returned: dict[int, threading.Event] = {}

    async def __aenter__(self) -> Self:
        if self._targets:
            self._task = asyncio.create_task(self._run(), name="notifier")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is None:
            return
        # What is still queued or sending after the bound is dropped (counted) below.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._pacing.stop_seconds):
                await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        while not self._queue.empty():
            self._drop(self._queue.get_nowait(), "stopping")

    def send(self, event: OperationalEvent) -> None:
        """Queue a message about `event`; never waits, never raises."""
        if not self._targets:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop(event, "queue_full")

    async def test(self) -> list[NotifyResult]:
        """One try of `test_message()` to every URL at once, for `receiver notify test`."""
        message = test_message()
        return list(await asyncio.gather(*(self._try(target, message) for target in self._targets)))

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            except Exception:  # one event's trouble must not stop the rest
                log.exception("notification_unsent", event_id=event.event_id)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: OperationalEvent) -> None:
        message = message_for(event, self._public_url)
        results = await asyncio.gather(
            *(self._send_to(target, event, message) for target in self._targets)
        )
        if self._record is None:
            return
        delivered = sum(results)
        try:
            await self._record(event, message, delivered, len(results) - delivered)
        except Exception:  # the caller's callback: logged, never raised here
            log.exception("notification_record_failed", event_id=event.event_id)

    async def _send_to(self, target: _Target, event: OperationalEvent, message: Message) -> bool:
        """Every try at one URL; its final result counted and logged. Cancelled (the stop),
        the message is dropped for this URL."""
        fields = {
            "event_id": event.event_id,
            "event_type": event.type.value,
            "what": f"URL {target.position} ({target.scheme})",
        }
        tries = 0
        try:
            for delay in (*self._pacing.retry_delays, None):
                tries += 1
                result = await self._try(target, message)
                if result.ok or delay is None:
                    break
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._count(DROPPED)
            log.warning("notification_dropped", reason="stopping", **fields)
            raise
        if result.ok:
            self._count(SENT)
            log.info("notification_sent", attempt=tries, **fields)
        else:
            self._count(FAILED)
            log.warning("notification_failed", attempt=tries, reason=result.error, **fields)
        return result.ok

    def _count(self, result: str) -> None:
        if self._on_result is not None:
            self._on_result(result)

    async def _try(self, target: _Target, message: Message) -> NotifyResult:
        returned = self._returned.get(target.position)
        if returned is not None and not returned.is_set():
            return NotifyResult(target.position, target.scheme, False, BUSY)

        def notify() -> bool:
            return bool(
                target.sender.notify(
                    body=message.body, title=message.title, notify_type=message.severity
                )
            )

        self._returned[target.position], answer = _start_daemon_thread(notify)
        try:
            async with asyncio.timeout(self._pacing.attempt_seconds):
                ok = await answer
        except Exception as exc:  # noqa: BLE001 - a library's failure is this URL's result
            return NotifyResult(target.position, target.scheme, False, type(exc).__name__)
        return NotifyResult(target.position, target.scheme, ok, None if ok else "NotDelivered")

    def _drop(self, event: OperationalEvent, reason: str) -> None:
        for _ in self._targets:
            self._count(DROPPED)
        log.warning(
            "notification_dropped",
            reason=reason,
            event_id=event.event_id,
            event_type=event.type.value,
            count=len(self._targets),
        )


def notifications_table(engine: AsyncEngine) -> RecordNotification:
    """The `record` that keeps the console's list of the last notifications."""

    async def record(
        event: OperationalEvent, message: Message, delivered: int, failed: int
    ) -> None:
        async with transaction(engine) as connection:
            await record_notification(
                connection,
                event.event_id,
                event.type.value,
                message.title,
                datetime.now(UTC),
                delivered,
                failed,
            )

    return record


def _start_daemon_thread(call: Callable[[], T]) -> tuple[threading.Event, "asyncio.Future[T]"]:
    """`call()` started in a daemon thread of its own: an event set once it returned (or
    raised), and the future of its result (or of what it raised)."""
    loop = asyncio.get_running_loop()
    returned = threading.Event()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            settle = partial(_set_result, done, call())
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting task
            settle = partial(_set_exception, done, exc)
        finally:
            returned.set()
        with contextlib.suppress(RuntimeError):  # the loop closed while the service hung
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=run, name="notify", daemon=True).start()
    return returned, done


def _set_result(future: "asyncio.Future[T]", value: T) -> None:
    if not future.done():  # else the caller stopped waiting
        future.set_result(value)


def _set_exception(future: "asyncio.Future[T]", error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
