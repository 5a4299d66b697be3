"""The outbox, as the forwarder and operators use it: claim, record, release, replay, list.

Work is claimed from the database, never from memory, so any process can pick it up. A
claim is a lease (`lease_owner`, `lease_expires_at`) taken in one UPDATE, so two forwarders
cannot both take a row: SQLite serialises writers, and on PostgreSQL the inner SELECT uses
FOR UPDATE SKIP LOCKED. A lease left by a crashed process simply expires.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.filters import EventFilter, event_conditions
from receiver.store.tables import attempts, deliveries, events


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    event_id: str
    attempts_made: int
    target_url: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    attempt: int
    attempted_at: datetime
    duration_ms: float
    status_code: int | None
    error_class: str | None
    state: DeliveryState
    next_attempt_at: datetime | None


async def claim_due_deliveries(
    connection: AsyncConnection, owner: str, limit: int, lease_seconds: float, now: datetime
) -> list[ClaimedDelivery]:
    claimable = (deliveries.c.state == DeliveryState.PENDING) & (
        deliveries.c.lease_expires_at.is_(None) | (deliveries.c.lease_expires_at < now)
    )
    due = (
        sa.select(deliveries.c.id)
        .where(claimable, deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = await connection.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(due.scalar_subquery()), claimable)
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(deliveries.c.id)
    )
    ids = [row.id for row in claimed]
    if not ids:
        return []
    rows = await connection.execute(
        sa.select(
            deliveries.c.id,
            deliveries.c.event_id,
            deliveries.c.attempts,
            deliveries.c.target_url,
            events.c.body,
        )
        .join(events, events.c.id == deliveries.c.event_id)
        .where(deliveries.c.id.in_(ids))
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    )
    return [
        ClaimedDelivery(row.id, row.event_id, row.attempts, row.target_url, row.body)
        for row in rows
    ]


async def record_attempts(
    connection: AsyncConnection, owner: str, records: list[AttemptRecord]
) -> None:
    """Write each attempt, and move its delivery on if this owner still holds the lease."""
    await connection.execute(
        sa.insert(attempts),
        [
            {
                "delivery_id": record.delivery_id,
                "attempted_at": record.attempted_at,
                "duration_ms": record.duration_ms,
                "status_code": record.status_code,
                "error_class": record.error_class,
            }
            for record in records
        ],
    )
    finished = {DeliveryState.DELIVERED, DeliveryState.DEAD}
    await connection.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.id == sa.bindparam("b_id"),
            deliveries.c.lease_owner == owner,
        )
        .values(
            state=sa.bindparam("b_state"),
            attempts=sa.bindparam("b_attempts"),
            next_attempt_at=sa.func.coalesce(
                sa.bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
                deliveries.c.next_attempt_at,
            ),
            finished_at=sa.bindparam("b_finished", type_=deliveries.c.finished_at.type),
            last_status_code=sa.bindparam("b_status"),
            last_error=sa.bindparam("b_error"),
            lease_owner=None,
            lease_expires_at=None,
        ),
        [
            {
                "b_id": record.delivery_id,
                "b_state": record.state,
                "b_attempts": record.attempt,
                "b_next": record.next_attempt_at,
                "b_finished": record.attempted_at if record.state in finished else None,
                "b_status": record.status_code,
                "b_error": record.error_class,
            }
            for record in records
        ],
    )


async def release_claims(connection: AsyncConnection, owner: str, ids: list[int]) -> None:
    """Hand unsent claims back at once, so a graceful stop leaves nothing waiting on a lease."""
    await connection.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


async def replay_events(
    connection: AsyncConnection, which: EventFilter, now: datetime, target_url: str | None = None
) -> int:
    """Queue a new delivery of every matching event, to `target_url` if given; how many."""
    selected = sa.select(
        events.c.id,
        sa.literal(DeliveryState.PENDING.value),
        sa.literal(target_url, sa.Text),
        sa.literal(now, deliveries.c.next_attempt_at.type),
        sa.literal(now, deliveries.c.created_at.type),
    ).where(*event_conditions(which))
    result = await connection.execute(
        sa.insert(deliveries).from_select(
            ["event_id", "state", "target_url", "next_attempt_at", "created_at"], selected
        )
    )
    return result.rowcount
