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

from receiver.ingest.envelope import TERMINAL_STATUSES, Event, Generation
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
    outcome = _outcome_before_applying(event)
    insert = _insert(connection, events).values(
        id=event.event_id,
        webhook_id=submission.msg_id,
        type=event.type,
        api_version=event.api_version,
        created_at=event.created_at,
        received_at=submission.received_at,
        task_id=event.generation.task_id if event.generation else None,
        outcome=outcome,
        quarantine_reason=event.quarantine_reason,
        body=submission.body,
    )
    stored = insert.on_conflict_do_nothing(index_elements=[events.c.id]).returning(events.c.id)
    if await connection.scalar(stored) is None:
        return None
    if event.generation and not await _apply(
        connection, event.event_id, event.generation, submission.received_at
    ):
        outcome = Outcome.STALE
        await connection.execute(
            sa.update(events).where(events.c.id == event.event_id).values(outcome=outcome)
        )
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
        where=records.c.status.not_in(TERMINAL_STATUSES)
        & (records.c.updated_at <= upsert.excluded.updated_at),
    )
    return await connection.scalar(upsert.returning(records.c.task_id)) is not None


def _insert(connection: AsyncConnection, table: sa.Table) -> Any:
    # ON CONFLICT is spelled the same on both backends but lives in each dialect.
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
