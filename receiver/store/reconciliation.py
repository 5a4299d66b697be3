"""What reconciliation reads and writes: which records are due to be asked about, claims on
them, what asking found, and the last credit balance read.

A record is due when it is not terminal, has not changed for `after`, has not been asked
about for as long, and Rivya has not said it does not know the task. Claiming one sets
`reconciled_at` to now in the same statement that re-checks it is due: on PostgreSQL the
rows are first locked with SKIP LOCKED, so passes running at once in several processes
each take different records, and none is asked about twice within `after`. A claim that
could not be asked about (the pass stopped) is handed back: `reconciled_at` as it was.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.model import Generation
from receiver.store.events import record_row
from receiver.store.records import dialect_insert, stale_conditions
from receiver.store.statements import Run, upsert_records
from receiver.store.tables import records, rivya_credits


class ReconcileState(StrEnum):
    """What the last question to Rivya about a record found (`records.reconcile_state`)."""

    RUNNING = "running"  # still queued or processing at Rivya
    COMPLETED = "completed"  # terminal at Rivya; the record reflects it
    NOT_FOUND = "not_found"  # Rivya does not know the task: not asked again unless forced
    FAILED = "failed"  # Rivya's answer could not be used


@dataclass(frozen=True, slots=True)
class Claim:
    task_id: str
    status: str
    # What `reconciled_at` was before the claim, to hand it back unchanged.
    previous: datetime | None


def due_conditions(after: timedelta, now: datetime) -> list[Any]:
    asked_long_ago = records.c.reconciled_at.is_(None) | (records.c.reconciled_at <= now - after)
    known = records.c.reconcile_state.is_(None) | (
        records.c.reconcile_state != ReconcileState.NOT_FOUND.value
    )
    return [*stale_conditions(after, now), asked_long_ago, known]


async def claim_due_records(
    connection: AsyncConnection,
    after: timedelta,
    now: datetime,
    limit: int,
    task_ids: Sequence[str] | None = None,
) -> list[Claim]:
    """Up to `limit` records due at `now`, oldest change first, claimed as asked at `now`
    (so a pass that claims as of its start never claims one twice); or the records of
    `task_ids`, whatever their state (an operator forcing a question)."""
    if task_ids is None:
        conditions = due_conditions(after, now)
        order = [records.c.changed_at, records.c.task_id]
    else:
        conditions, order = [records.c.task_id.in_(task_ids)], [records.c.task_id]
    found = (
        await connection.execute(
            sa.select(records.c.task_id, records.c.status, records.c.reconciled_at)
            .where(*conditions)
            .order_by(*order)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not found:
        return []
    taken = set(
        await connection.scalars(
            sa.update(records)
            .where(records.c.task_id.in_([row.task_id for row in found]), *conditions)
            .values(reconciled_at=now)
            .returning(records.c.task_id)
        )
    )
    return [
        Claim(row.task_id, row.status, row.reconciled_at) for row in found if row.task_id in taken
    ]


async def release_claims(connection: AsyncConnection, claims: Sequence[Claim]) -> None:
    for claim in claims:
        await connection.execute(
            sa.update(records)
            .where(records.c.task_id == claim.task_id)
            .values(reconciled_at=claim.previous)
        )


async def mark_record(
    connection: AsyncConnection, task_id: str, state: ReconcileState, asked_at: datetime
) -> None:
    """What asking found, and when it was asked (the claim's time was the pass's start)."""
    await connection.execute(
        sa.update(records)
        .where(records.c.task_id == task_id)
        .values(reconcile_state=state.value, reconciled_at=asked_at)
    )


def apply_generation(run: Run, dialect: Dialect, generation: Generation, now: datetime) -> bool:
    """A generation Rivya reports still running, through the statement and never-regress
    rule webhooks use (no event: none is stored for a task that has not ended); whether
    it applied."""
    row = record_row(generation, None, now)
    statement = upsert_records(dialect, 1)
    return bool(run(statement, statement.parameters([row])))


async def count_due(connection: AsyncConnection, after: timedelta, now: datetime) -> int:
    query = sa.select(sa.func.count()).select_from(records).where(*due_conditions(after, now))
    return int((await connection.execute(query)).scalar_one())


async def save_credits(connection: AsyncConnection, balance: int, now: datetime) -> None:
    insert = dialect_insert(connection, rivya_credits).values(
        id=1, current_credits=balance, read_at=now
    )
    await connection.execute(
        insert.on_conflict_do_update(
            index_elements=[rivya_credits.c.id],
            set_={"current_credits": balance, "read_at": now},
        )
    )


async def read_credits(connection: AsyncConnection) -> dict[str, Any] | None:
    """The last balance read, and when; None if none was ever read."""
    row = (
        await connection.execute(
            sa.select(rivya_credits.c.current_credits, rivya_credits.c.read_at)
        )
    ).first()
    if row is None:
        return None
    return {"current_credits": row.current_credits, "read_at": row.read_at.isoformat()}
