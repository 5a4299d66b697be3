"""The single writer: group commit of incoming events.

Every request hands its event to one task that owns writing. The task takes whatever
has queued up (up to `max_batch`) and stores it in one transaction, so one durable commit
(one fsync on SQLite) acknowledges many requests, and writers never fight over the
database lock. Each request awaits its own future, resolved only after the commit.

If a batch fails because the database is unavailable (locked, full, gone, out of
connections: `database_unavailable` decides), every request in it gets
`StoreUnavailableError` (503) at once. If it fails for any other reason, its events are
retried one per transaction, so one event that cannot be stored does not sink the others;
if the database goes meanwhile, the rest of the batch gets `StoreUnavailableError` at once.
"""

import asyncio
import time
from collections.abc import Callable, Sequence

from opentelemetry.trace import Link, SpanContext, Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import Destination
from receiver.exceptions import StoreUnavailableError
from receiver.logs import log
from receiver.model import Outcome
from receiver.store.connections import WriteConnection, open_write_connection
from receiver.store.database import database_unavailable
from receiver.store.events import Submission, store_events
from receiver.tracing.spans import annotate, mark_failed, start_span

# The outcome of storing, or None for a duplicate; and the span of the request that waits.
_Pending = tuple[Submission, "asyncio.Future[Outcome | None]", SpanContext | None]


class EventWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        destinations: Sequence[Destination],
        on_stored: Callable[[], None] | None = None,
        busy_timeout_seconds: float = 5.0,
        max_batch: int = 256,
        observe: Callable[[int, float], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """`destinations`: where new events are forwarded (an outbox row for each that
        wants the event); `on_stored`: called after a commit
        that stored something new (the in-process forwarder's wake-up); `observe`: called
        with each committed batch's size and its transaction's duration in seconds;
        `tracer`: a span for each batch, linked to the requests it acknowledges."""
        self._engine = engine
        self._tracer = tracer
        self._observe = observe
        self._busy_timeout_seconds = busy_timeout_seconds
        self._destinations = destinations
        self._on_stored = on_stored
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def reconfigure(self, destinations: Sequence[Destination]) -> None:
        """Events stored from the next batch on get deliveries for `destinations` (a reload)."""
        self._destinations = destinations

    async def __aenter__(self) -> "EventWriter":
        connection = open_write_connection(self._engine, self._busy_timeout_seconds)
        self._task = asyncio.create_task(self._run(connection), name="event-writer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Refuse new work, finish what was queued, then stop.
        self._closing = True
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(
        self, submission: Submission, request: SpanContext | None = None
    ) -> Outcome | None:
        """Store `submission` durably; None means it was a duplicate. `request`: the span
        the batch that stores it links to."""
        if self._closing:
            raise StoreUnavailableError("the receiver is shutting down")
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((submission, future, request))
        return await future

    async def _run(self, connection: WriteConnection) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    await self._commit(connection, batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            await connection.close()

    async def _commit(
        self, connection: WriteConnection, batch: list[_Pending]
    ) -> BaseException | None:
        """Store `batch`; the error that said the database is unavailable, if one did."""
        if self._tracer is None:
            return await self._store(connection, batch)
        # A batch serves many requests, each in a trace of its own: links, not a parent.
        links = [Link(request) for _, _, request in batch if request and request.is_valid]
        rows = {"receiver.batch.rows": len(batch)}
        with start_span(self._tracer, "receiver.store.batch", links=links, attributes=rows):
            return await self._store(connection, batch)

    async def _store(
        self, connection: WriteConnection, batch: list[_Pending]
    ) -> BaseException | None:
        submissions = [submission for submission, _, _ in batch]
        started = time.perf_counter()
        try:
            outcomes = await connection.transact(
                lambda run, dialect: store_events(run, dialect, submissions, self._destinations)
            )
        except Exception as exc:  # noqa: BLE001 - the database's absence, or one event's fault
            mark_failed(exc)
            unavailable = database_unavailable(exc)
            if unavailable or len(batch) == 1:
                _fail(batch, exc)
                return exc if unavailable else None
            for index, pending in enumerate(batch):
                # Gone meanwhile: the rest would each wait for it in turn (a server that
                # stopped answering, the busy timeout each), so they are a 503 at once.
                if absent := await self._commit(connection, [pending]):
                    if rest := batch[index + 1 :]:
                        _fail(rest, absent)
                    return absent
        else:
            seconds = time.perf_counter() - started
            annotate({"receiver.batch.commit_ms": round(seconds * 1000, 2)})
            if self._observe:
                self._observe(len(batch), seconds)
            for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
            if self._on_stored and any(outcome is not None for outcome in outcomes):
                self._on_stored()
        return None


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    log.warning("store_failed", batch_size=len(batch), exc_info=exc)
    for _, future, _ in batch:
        if not future.done():
            error = StoreUnavailableError("the event could not be stored")
            error.__cause__ = exc
            future.set_exception(error)
