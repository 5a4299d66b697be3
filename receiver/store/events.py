"""Storing verified events: each one's row, its record update and its outbox rows (one per
destination that wants it), together.

The caller owns the transaction, so everything in a batch commits or nothing does, and
hands in `run`, which sends prepared SQL to the database (see `receiver.store.statements`).
A batch costs a handful of statements, whatever its size. The code is synchronous so that a
whole batch can run on the SQLite writer's thread in one hand-over; on an async engine,
`AsyncConnection.run_sync` runs it.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from receiver.destinations import Destination
from receiver.exceptions import NotFoundError
from receiver.model import Event, Generation, Outcome
from receiver.store.deliveries import DeliveryState
from receiver.store.statements import (
    Prepared,
    Run,
    insert_deliveries,
    insert_events,
    mark_stale,
    run_rows,
    upsert_records,
)
from receiver.store.tables import deliveries, events
from receiver.tracing.carriers import Carrier


@dataclass(frozen=True, slots=True)
class Submission:
    event: Event
    msg_id: str
    body: bytes
    received_at: datetime
    # The span that stored it, whose children its deliveries' attempts will be.
    trace: Carrier | None = None


def store_events(
    run: Run, dialect: Dialect, batch: Sequence[Submission], destinations: Sequence[Destination]
) -> list[Outcome | None]:
    """Store each submission, with an outbox row for each of `destinations` that wants it
    (by its type and final outcome); None marks a duplicate (of a stored event, or of one
    earlier in the batch)."""
    firsts: dict[str, Submission] = {}
    for submission in batch:
        firsts.setdefault(submission.event.event_id, submission)
    rows = [_event_row(s) for s in firsts.values()]
    stored = {event_id for (event_id,) in run_rows(run, dialect, insert_events, rows)}
    inserted = [s for event_id, s in firsts.items() if event_id in stored]
    stale = _apply_all(run, dialect, [s for s in inserted if s.event.generation])
    if stale:
        run_rows(run, dialect, mark_stale, [{"id": event_id} for event_id in stale])
    final = {
        s.event.event_id: Outcome.STALE
        if s.event.event_id in stale
        else _outcome_before_applying(s.event)
        for s in inserted
    }
    outbox = [
        _delivery_row(s, destination.name)
        for s in inserted
        for destination in destinations
        if destination.wants(s.event.type, final[s.event.event_id])
    ]
    run_rows(run, dialect, insert_deliveries, outbox)
    # The first submission of each stored event gets its outcome; repeats get None.
    return [final.pop(s.event.event_id) if s.event.event_id in final else None for s in batch]


class Reprocessed(NamedTuple):
    outcome: Outcome
    # Whether the outcome differs from the one stored before (a quarantined event that now
    # applies); reapplying what a record already reflects changes nothing an operator sees.
    changed: bool


def reprocess_event(
    connection: Connection,
    event_id: str,
    now: datetime,
    parse: Callable[[bytes, str], Event],
    destinations: Sequence[Destination],
) -> Reprocessed:
    """Parse a stored body again with `parse` (ingest's parser, which the store does not
    import) and apply it, as if it had just arrived (after an upgrade taught us a shape).
    Queues a delivery to each of `destinations` that wants the event as it now reads and has
    none of it: one that was sent it under its old outcome is not sent it twice, and a
    repeat queues nothing more."""
    # Read with a write that changes nothing: its lock keeps the event until this
    # transaction ends, so a prune can no longer remove it under what is applied next (a
    # delivery queued for it would fail its foreign key, and the records it changed would
    # stay changed). One a prune removed first is not found, and nothing was written.
    row = connection.execute(
        sa.update(events)
        .where(events.c.id == event_id)
        .values(webhook_id=events.c.webhook_id)
        .returning(events.c.webhook_id, events.c.body, events.c.outcome)
    ).first()
    if row is None:
        raise NotFoundError(f"no event {event_id!r}")
    # The stored ID stays the key, even if the body now reads differently.
    event = replace(parse(row.body, row.webhook_id), event_id=event_id)
    outcome = _outcome_before_applying(event)
    submission = Submission(event, row.webhook_id, row.body, now)
    if event.generation and _apply_all(run_on(connection), connection.dialect, [submission]):
        outcome = Outcome.STALE
    connection.execute(
        sa.update(events).where(events.c.id == event_id).values(**_parsed_columns(event, outcome))
    )
    sent = set(
        connection.scalars(
            sa.select(deliveries.c.destination).where(deliveries.c.event_id == event_id)
        )
    )
    outbox = [
        _delivery_row(submission, destination.name)
        for destination in destinations
        if destination.name not in sent and destination.wants(event.type, outcome)
    ]
    if outbox:
        connection.execute(sa.insert(deliveries), outbox)
    return Reprocessed(outcome, outcome != row.outcome)


def run_on(connection: Connection) -> Run:
    """`run` over a SQLAlchemy connection, inside its current transaction."""

    def run(statement: Prepared, parameters: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        result = connection.exec_driver_sql(statement.sql, parameters)
        return result.fetchall() if result.returns_rows else []

    return run


def _apply_all(run: Run, dialect: Dialect, applicable: list[Submission]) -> set[str]:
    """Upsert each generation's record (the rule is in the statement); the IDs of the
    events that did not apply (stale).

    One statement decides each record, so concurrent writers (replicas on PostgreSQL)
    cannot interleave a read and a write. Events for the same task go in successive
    rounds, in arrival order: one statement may not touch a row twice.
    """
    stale: set[str] = set()
    while applicable:
        this_round: list[dict[str, Any]] = []
        later: list[Submission] = []
        tasks: set[str] = set()
        for submission in applicable:
            if submission.event.generation is None:
                raise ValueError("only events with a generation apply to records")
            row = record_row(
                submission.event.generation, submission.event.event_id, submission.received_at
            )
            if row["task_id"] in tasks:
                later.append(submission)
            else:
                this_round.append(row)
                tasks.add(row["task_id"])
        applied = run_rows(run, dialect, upsert_records, this_round)
        stale |= {row["last_event_id"] for row in this_round} - {
            event_id for (event_id,) in applied
        }
        applicable = later
    return stale


def _event_row(submission: Submission) -> dict[str, Any]:
    event = submission.event
    return {
        "id": event.event_id,
        "webhook_id": submission.msg_id,
        "received_at": submission.received_at,
        "body": submission.body,
        "traceparent": submission.trace.traceparent if submission.trace else None,
        "tracestate": submission.trace.tracestate if submission.trace else None,
        **_parsed_columns(event, _outcome_before_applying(event)),
    }


def record_row(
    generation: Generation, event_id: str | None, changed_at: datetime
) -> dict[str, Any]:
    """The record columns a generation sets (`upsert_records`), by event `event_id`."""
    return {
        "task_id": generation.task_id,
        "status": generation.status,
        "model": generation.model,
        "reserved_credits": generation.reserved_credits,
        "final_credits": generation.final_credits,
        "result_urls": list(generation.result_urls),
        "error_code": generation.error_code,
        "error_message": generation.error_message,
        "updated_at": generation.updated_at,
        "last_event_id": event_id,
        "changed_at": changed_at,
    }


def _delivery_row(submission: Submission, destination: str) -> dict[str, Any]:
    return {
        "event_id": submission.event.event_id,
        "destination": destination,
        "state": DeliveryState.PENDING.value,
        "next_attempt_at": submission.received_at,
        "created_at": submission.received_at,
    }


def _parsed_columns(event: Event, outcome: Outcome) -> dict[str, Any]:
    return {
        "type": event.type,
        "api_version": event.api_version,
        "created_at": event.created_at,
        "task_id": event.generation.task_id if event.generation else None,
        "outcome": outcome.value,
        "quarantine_reason": event.quarantine_reason,
    }


def _outcome_before_applying(event: Event) -> Outcome:
    if event.quarantine_reason:
        return Outcome.QUARANTINED
    return Outcome.APPLIED if event.generation else Outcome.IGNORED
