"""Reconciliation: asking Rivya about the tasks it has not told us the end of.

Webhooks stay the fast path. A delivery can still be lost (an outage longer than Rivya's
retries, or our endpoint disabled by Rivya), and then a record would stay `queued` or
`processing` for ever. A pass asks Rivya's API about each due record (see
`store.reconciliation`), at the configured rate:

- a generation still running is applied like a webhook's (same statement, same
  never-regress rule), and the record is asked about again only after another
  `RECEIVER_RECONCILE_AFTER_SECONDS`;
- a generation that has ended is stored as a synthesized event, `reconciled:{task}:{status}`
  (so two passes store it once), with `"source": "reconciliation"`, and is forwarded to the
  destinations like any event; Rivya's own webhook for it, arriving later, is stale;
- an unknown task (404) is not asked about again unless an operator forces it;
- a refused key (401/403) or an unavailable API stops the pass; its unasked claims are
  handed back and the next pass tries again.

Each pass also reads the credit balance, and writes one audit line.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from receiver.destinations import Destination
from receiver.generations import Unparseable, parse_generation
from receiver.logs import log
from receiver.model import APPLIED_TYPES, TERMINAL_STATUSES, Event, Generation, Outcome
from receiver.operational.alerts import Alerts
from receiver.periodic import Periodic
from receiver.reconcile.rivya_api import (
    RivyaAPI,
    RivyaAuthError,
    RivyaNotFoundError,
    RivyaResponseError,
    RivyaUnavailableError,
)
from receiver.settings import Settings
from receiver.store.database import transaction
from receiver.store.events import Submission, run_on, store_events
from receiver.store.reconciliation import (
    Claim,
    ReconcileState,
    apply_generation,
    claim_due_records,
    mark_record,
    release_claims,
    save_credits,
)
from receiver.tracing.carriers import Carrier, carrier_of
from receiver.tracing.http import rivya_trace_configs
from receiver.tracing.pipeline import Tracing
from receiver.tracing.spans import annotate, start_span

SOURCE = "reconciliation"
EVENT_TYPES = {status: event_type for event_type, status in APPLIED_TYPES.items()}
# Records claimed at once: about what the default rate asks in ten seconds. A claim only
# delays the record's next question, so a pass cut short costs little.
BATCH = 20


@dataclass(slots=True)
class PassReport:
    who: str
    result: str = "ok"  # ok, auth_failed, unavailable
    asked: int = 0
    changed: int = 0
    not_found: int = 0
    failed: int = 0
    # Rivya's error code when the pass stopped early.
    error_code: str | None = None
    credits: int | None = None


Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


class Reconciler:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        on_request: Callable[[str], None] | None = None,
        on_pass: Callable[[str], None] | None = None,
        on_stored: Callable[[], None] | None = None,
        tracing: Tracing | None = None,
        alerts: Alerts | None = None,
    ) -> None:
        """`on_request(status)` and `on_pass(result)` feed the metrics; `on_stored` is called
        when a synthesized event was stored (this process's forwarder); `tracing`: a span for
        each pass, with a child for each call to Rivya's API and for each event it stores
        (whose deliveries then hang under the pass); `alerts`: the balance read, and the key
        refused or accepted, as operational conditions."""
        if settings.rivya_api_key is None:
            raise ValueError("reconciliation needs RECEIVER_RIVYA_API_KEY")
        self._engine = engine
        self._settings = settings
        self._after = settings.reconcile_after
        self._destinations: Sequence[Destination] = settings.forwarding
        self._api = RivyaAPI(
            settings.rivya_api_url,
            settings.rivya_api_key,
            settings.rivya_api_rate,
            settings.rivya_api_timeout_seconds,
            on_request,
            trace_configs=rivya_trace_configs(tracing),
        )
        self._tracer = tracing.tracer if tracing else None
        self._on_pass = on_pass
        self._on_stored = on_stored
        self._alerts = alerts
        self._periodic = Periodic(
            "reconciler",
            settings.reconcile_interval_seconds,
            lambda: self.run_pass("reconciler"),
            "reconcile_pass_failed",
        )

    def reconfigure(self, destinations: Sequence[Destination]) -> None:
        """Events synthesized from now on are forwarded to `destinations` (a reload)."""
        self._destinations = destinations

    async def __aenter__(self) -> "Reconciler":
        await self._api.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._periodic.stop()
        await self._api.__aexit__(*exc_info)

    def run_periodically(self) -> None:
        """A pass every RECEIVER_RECONCILE_INTERVAL_SECONDS until the context ends."""
        self._periodic.start()
        log.info("reconciler_started")

    async def run_pass(
        self,
        who: str,
        after: timedelta | None = None,
        task_ids: Sequence[str] | None = None,
        progress: Progress = _no_progress,
    ) -> PassReport:
        """Ask about every due record (unchanged for `after`, by default the setting's), or
        about the records of `task_ids` whatever their state."""
        with start_span(self._tracer, "receiver.reconcile.pass", attributes={"receiver.who": who}):
            report = await self._run_pass(who, after, task_ids, progress)
            annotate(
                {
                    "receiver.reconcile.result": report.result,
                    "receiver.reconcile.asked": report.asked,
                    "receiver.reconcile.changed": report.changed,
                    "receiver.reconcile.not_found": report.not_found,
                    "receiver.reconcile.failed": report.failed,
                    "error.type": report.error_code,
                }
            )
        return report

    async def _run_pass(
        self,
        who: str,
        after: timedelta | None,
        task_ids: Sequence[str] | None,
        progress: Progress,
    ) -> PassReport:
        report = PassReport(who)
        # Due as of the pass's start: a record asked about during the pass is not due again
        # before it ends, however long it takes.
        started = datetime.now(UTC)
        try:
            report.credits = await self._read_credits()
            while claims := await self._claim(after or self._after, started, task_ids):
                await self._ask_each(claims, report, progress)
                if task_ids is not None:
                    break
            # Only a whole pass says the key is accepted: one that may read the balance but
            # not generations (403 api_scope_denied) is refused in every pass.
            if self._alerts is not None:
                await self._alerts.key_accepted()
        except (RivyaAuthError, RivyaUnavailableError) as exc:
            report.result = "auth_failed" if isinstance(exc, RivyaAuthError) else "unavailable"
            report.error_code = exc.code
            log.warning("reconcile_stopped", reason=exc.code, what=report.result)
            if self._alerts is not None and isinstance(exc, RivyaAuthError):
                await self._alerts.key_refused(exc.code)
        if self._on_pass is not None:
            self._on_pass(report.result)
        log.info(
            "audit",
            who=who,
            what="reconcile",
            outcome=report.result,
            count=report.asked,
            changed=report.changed,
            not_found=report.not_found,
            failed=report.failed,
        )
        return report

    async def _read_credits(self) -> int | None:
        try:
            balance = await self._api.credits()
        except RivyaResponseError as exc:
            log.warning("rivya_credits_unreadable", reason=exc.code)
            return None
        async with transaction(self._engine) as connection:
            await save_credits(connection, balance, datetime.now(UTC))
        threshold = self._settings.low_credits_threshold
        if threshold is not None and balance <= threshold:
            log.warning("rivya_credits_low", credits=balance, threshold=threshold)
        if self._alerts is not None:
            await self._alerts.credits_read(balance)
        return balance

    async def _claim(
        self, after: timedelta, started: datetime, task_ids: Sequence[str] | None
    ) -> list[Claim]:
        async with transaction(self._engine) as connection:
            return await claim_due_records(connection, after, started, BATCH, task_ids=task_ids)

    async def _ask_each(self, claims: list[Claim], report: PassReport, progress: Progress) -> None:
        for done, claim in enumerate(claims):
            try:
                answer = await self._api.generation(claim.task_id)
            except RivyaNotFoundError:
                state = ReconcileState.NOT_FOUND
                report.not_found += 1
            except RivyaResponseError as exc:
                log.warning("reconcile_unusable_answer", task_id=claim.task_id, reason=exc.code)
                state = ReconcileState.FAILED
                report.failed += 1
            except BaseException:
                # The pass stops (the API is refusing us or gone, or the process is
                # stopping): this claim and the rest go back for the next pass.
                async with transaction(self._engine) as connection:
                    await release_claims(connection, claims[done:])
                raise
            else:
                try:
                    state, changed = await self._apply(claim, answer)
                except SQLAlchemyError as exc:
                    # The database refused this record's row (an unavailable database is a
                    # StoreUnavailableError, and stops the pass): the record fails, not the
                    # pass, or every pass would stop at it for ever.
                    log.warning(
                        "reconcile_unstorable_answer",
                        task_id=claim.task_id,
                        error_class=type(exc).__name__,
                    )
                    state, changed = ReconcileState.FAILED, False
                report.changed += changed
                report.failed += state is ReconcileState.FAILED
            report.asked += 1
            async with transaction(self._engine) as connection:
                await mark_record(connection, claim.task_id, state, datetime.now(UTC))
            progress(1)

    async def _apply(self, claim: Claim, answer: dict[str, Any]) -> tuple[ReconcileState, bool]:
        """What Rivya's answer does to the record, and whether it changed it."""
        try:
            generation = parse_generation(answer)
        except Unparseable as exc:
            log.warning("reconcile_unusable_answer", task_id=claim.task_id, reason=exc.reason)
            return ReconcileState.FAILED, False
        if generation.task_id != claim.task_id:
            log.warning("reconcile_unusable_answer", task_id=claim.task_id, reason="other_task")
            return ReconcileState.FAILED, False
        now = datetime.now(UTC)
        if generation.status not in TERMINAL_STATUSES:
            async with transaction(self._engine) as connection:
                await connection.run_sync(
                    lambda sync: apply_generation(run_on(sync), sync.dialect, generation, now)
                )
            return ReconcileState.RUNNING, generation.status != claim.status
        if claim.status in TERMINAL_STATUSES:
            # Asked by force about a record already final: nothing can apply, and an event
            # would only repeat (as stale) what subscribers were told.
            return ReconcileState.COMPLETED, False
        with start_span(
            self._tracer, "receiver.reconcile.store", attributes={"receiver.task_id": claim.task_id}
        ) as span:
            submission = synthesized_event(answer, generation, now, carrier_of(span))
            annotate({"receiver.event_id": submission.event.event_id})
            async with transaction(self._engine) as connection:
                (outcome,) = await connection.run_sync(
                    lambda sync: store_events(
                        run_on(sync), sync.dialect, [submission], self._destinations
                    )
                )
            annotate({"receiver.outcome": outcome.value if outcome else "duplicate"})
        if outcome is not None and self._on_stored is not None:
            self._on_stored()
        return ReconcileState.COMPLETED, outcome is Outcome.APPLIED


def synthesized_event(
    answer: dict[str, Any], generation: Generation, now: datetime, trace: Carrier | None = None
) -> Submission:
    """The event a webhook would have carried: the envelope's usual keys, Rivya's answer as
    `data`, and where it came from; stored by the span `trace` holds."""
    event_id = f"reconciled:{generation.task_id}:{generation.status}"
    event_type = EVENT_TYPES[generation.status]
    envelope = {
        "id": event_id,
        "type": event_type,
        "api_version": None,
        "created_at": now.isoformat(),
        "data": answer,
        "source": SOURCE,
    }
    event = Event(event_id, event_type, None, now, generation)
    return Submission(event, event_id, orjson.dumps(envelope), now, trace)
