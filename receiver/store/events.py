"""Storing one verified event: its row, its record update and its outbox row, together.

The caller owns the transaction, so all three commit or none does.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.exceptions import NotFoundError
from receiver.ingest.envelope import TERMINAL_STATUSES, Event, Generation, parse_event
from receiver.store.deliveries import DeliveryState
from receiver.store.tables import deliveries, events, records


class Outcome(StrEnum):
    """What storing an event did, as kept in `events.outcome`."""

    APPLIED = "applied"  # the record now reflects it
    STALE = "stale"  # the record was already newer or terminal
    IGNORED = "ignored"  # a type we do not apply to records
    QUARANTINED = "quarantined"  # authentic, but a shape we do not understand


@dataclass(frozen=True, slots=True)
class Submission:
    event: Event
    msg_id: str
    body: bytes
    received_at: datetime


async def store_event(
    connection: AsyncConnection, submission: Submission, forward: bool
) -> Outcome | None:
    """Store `submission`, with an outbox row if `forward`; None means a duplicate."""
    event = submission.event
    insert = _insert(connection, events).values(
        id=event.event_id,
        webhook_id=submission.msg_id,
        received_at=submission.received_at,
        body=submission.body,
        **_parsed_columns(event, _outcome_before_applying(event)),
    )
    stored = insert.on_conflict_do_nothing(index_elements=[events.c.id]).returning(events.c.id)
    if await connection.scalar(stored) is None:
        return None
    outcome = await _apply_to_record(connection, event.event_id, event, submission.received_at)
    if forward:
        await connection.execute(
            sa.insert(deliveries).values(
                event_id=event.event_id,
                state=DeliveryState.PENDING,
                next_attempt_at=submission.received_at,
                created_at=submission.received_at,
            )
        )
    return outcome


async def reprocess_event(connection: AsyncConnection, event_id: str, now: datetime) -> Outcome:
    """Parse a stored body again and apply it, as if it had just arrived (after an upgrade
    taught us a shape). Idempotent; adds no delivery."""
    row = (
        await connection.execute(
            sa.select(events.c.webhook_id, events.c.body).where(events.c.id == event_id)
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no event {event_id!r}")
    event = parse_event(row.body, row.webhook_id)
    await connection.execute(
        sa.update(events)
        .where(events.c.id == event_id)
        .values(**_parsed_columns(event, _outcome_before_applying(event)))
    )
    return await _apply_to_record(connection, event_id, event, now)


def _parsed_columns(event: Event, outcome: Outcome) -> dict[str, Any]:
    return {
        "type": event.type,
        "api_version": event.api_version,
        "created_at": event.created_at,
        "task_id": event.generation.task_id if event.generation else None,
        "outcome": outcome,
        "quarantine_reason": event.quarantine_reason,
    }


async def _apply_to_record(
    connection: AsyncConnection, event_id: str, event: Event, now: datetime
) -> Outcome:
    """Apply the event's generation, if any; its final outcome, kept on its row."""
    if event.generation is None:
        return _outcome_before_applying(event)
    if await _apply(connection, event_id, event.generation, now):
        return Outcome.APPLIED
    await connection.execute(
        sa.update(events).where(events.c.id == event_id).values(outcome=Outcome.STALE)
    )
    return Outcome.STALE


def _outcome_before_applying(event: Event) -> Outcome:
    if event.quarantine_reason:
        return Outcome.QUARANTINED
    return Outcome.APPLIED if event.generation else Outcome.IGNORED


async def _apply(
    connection: AsyncConnection, event_id: str, generation: Generation, now: datetime
) -> bool:
    """Upsert the record unless it is terminal or newer; True if it changed.

    One statement, so that concurrent writers (replicas on PostgreSQL) cannot interleave
    a read and a write.
    """
    upsert = _insert(connection, records).values(
        task_id=generation.task_id,
        status=generation.status,
        model=generation.model,
        reserved_credits=generation.reserved_credits,
        final_credits=generation.final_credits,
        result_urls=list(generation.result_urls),
        error_code=generation.error_code,
        error_message=generation.error_message,
        updated_at=generation.updated_at,
        last_event_id=event_id,
        changed_at=now,
    )
    changed = {c.name: upsert.excluded[c.name] for c in records.c if c.name != "task_id"}
    upsert = upsert.on_conflict_do_update(
        index_elements=[records.c.task_id],
        set_=changed,
        # Re-applying the event the record already reflects is harmless (reprocessing).
        where=(
            records.c.status.not_in(TERMINAL_STATUSES)
            & (records.c.updated_at <= upsert.excluded.updated_at)
        )
        | (records.c.last_event_id == upsert.excluded.last_event_id),
    )
    return await connection.scalar(upsert.returning(records.c.task_id)) is not None


def _insert(connection: AsyncConnection, table: sa.Table) -> Any:
    # ON CONFLICT is spelled the same on both backends but lives in each dialect.
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
