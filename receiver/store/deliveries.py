"""The outbox, as the forwarder and operators use it: claim, record, release, replay, list.

Work is claimed from the database, never from memory, so any process can pick it up. A
claim is a lease (`lease_owner`, `lease_expires_at`) taken in one UPDATE, so two forwarders
cannot both take a row: SQLite serialises writers, and on PostgreSQL the inner SELECT uses
FOR UPDATE SKIP LOCKED. A lease left by a crashed process simply expires.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.destinations import EVERY_OUTCOME, Destination
from receiver.store import statements
from receiver.store.filters import EventFilter, event_conditions
from receiver.store.statements import Run
from receiver.store.tables import deliveries, events


class DeliveryState(StrEnum):
    """Stored states. `dead` alone means "needs action": every figure of dead letters reads
    `state = 'dead'` and nothing else. A dead letter leaves it when its pair (the event, the
    destination, the target URL) is queued again (`replayed`: a retry is in flight) or
    delivered (`recovered`); both stay as history."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    REPLAYED = "replayed"
    RECOVERED = "recovered"


# Not stored: how listings show a pending delivery whose destination is no longer configured.
ORPHANED = "orphaned"


def shown_state(state: str, destination: str, configured: Collection[str]) -> str:
    """A delivery's state as operators see it: pending, but orphaned when nothing will send
    it until its destination is configured again."""
    if state == DeliveryState.PENDING and destination not in configured:
        return ORPHANED
    return state


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    destination: str
    event_id: str
    attempts_made: int
    target_url: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    destination: str
    event_id: str
    target_url: str | None
    attempt: int
    attempted_at: datetime
    duration_ms: float
    status_code: int | None
    error_class: str | None
    state: DeliveryState
    next_attempt_at: datetime | None


CHUNK = 64
T = TypeVar("T")


def claim_due_deliveries(
    run: Run,
    dialect: Dialect,
    owner: str,
    destination: str,
    limit: int,
    lease_seconds: float,
    now: datetime,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries of `destination` to `owner`, oldest due first."""
    statement = statements.claim_deliveries(dialect)
    lease = {
        "destination": destination,
        "owner": owner,
        "now": now,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "limit": limit,
    }
    rows = sorted(run(statement, statement.parameters([lease])), key=lambda row: (row[4], row[0]))
    bodies: dict[str, bytes] = {}
    for chunk in _chunks(sorted({row[1] for row in rows})):
        wanted = _padded([{"id": event_id} for event_id in chunk])
        statement = statements.select_bodies(dialect, len(wanted))
        found = run(statement, statement.parameters(wanted))
        bodies.update((event_id, bytes(body)) for event_id, body in found)
    return [
        ClaimedDelivery(delivery_id, destination, event_id, attempts, target_url, bodies[event_id])
        for delivery_id, event_id, attempts, target_url, _ in rows
    ]


def record_attempts(
    run: Run, dialect: Dialect, owner: str, records: list[AttemptRecord]
) -> list[AttemptRecord]:
    """Write each attempt, move its delivery on if this owner still holds the lease, and
    fold the attempts into their destinations' health. Returns the records whose delivery
    is gone (deleted while its attempt was in flight): their attempts can never be written,
    so they are left out rather than failing, for ever, the transaction they share with
    every other outcome and claim."""
    finished = {DeliveryState.DELIVERED, DeliveryState.DEAD}
    if records:
        statements.run_rows(run, dialect, statements.update_health, _health_rows(records))
    records, gone = _split_by_existence(run, dialect, records)
    for chunk in _chunks(records):
        attempt_rows = [
            {
                "delivery_id": record.delivery_id,
                "attempted_at": record.attempted_at,
                "duration_ms": record.duration_ms,
                "status_code": record.status_code,
                "error_class": record.error_class,
            }
            for record in chunk
        ]
        statements.run_rows(run, dialect, statements.insert_attempts, attempt_rows)
        outcomes = [
            {
                "id": record.delivery_id,
                "owner": owner,
                "state": record.state.value,
                "attempts": record.attempt,
                "next_attempt_at": record.next_attempt_at,
                "finished_at": record.attempted_at if record.state in finished else None,
                "last_status_code": record.status_code,
                "last_error": record.error_class,
            }
            for record in chunk
        ]
        outcomes = _padded(outcomes)
        statement = statements.record_outcomes(dialect, len(outcomes))
        run(statement, statement.parameters(outcomes))
        _settle_pairs(run, dialect, chunk)
    return gone


def _settle_pairs(run: Run, dialect: Dialect, records: list[AttemptRecord]) -> None:
    """In the outcomes' transaction: a delivered record recovers its pair's dead letters
    (and the replays that led to it); one gone dead makes its pair's older dead letters
    replayed, so that a pair counts once however often it was replayed. Only those two
    outcomes pay for a statement; most batches are all delivered, so one."""
    for state, build in (
        (DeliveryState.DELIVERED, statements.settle_recovered),
        (DeliveryState.DEAD, statements.settle_replayed),
    ):
        pairs = [
            {
                "id": record.delivery_id,
                "event_id": record.event_id,
                "destination": record.destination,
                "target_url": record.target_url,
            }
            for record in records
            if record.state is state
        ]
        if pairs:
            pairs = _padded(pairs)
            statement = build(dialect, len(pairs))
            run(statement, statement.parameters(pairs))


def _split_by_existence(
    run: Run, dialect: Dialect, records: list[AttemptRecord]
) -> tuple[list[AttemptRecord], list[AttemptRecord]]:
    """`records` whose delivery still exists, each locked so that it cannot go before its
    attempt is written; and those whose delivery does not. A delivery is known by its ID
    and what it delivers: SQLite gives a deleted row's ID to the next row if it was the
    last, and an attempt must not be written to another event's delivery."""
    existing: set[tuple[Any, ...]] = set()
    for chunk in _chunks(records):
        rows = _padded([{"id": record.delivery_id} for record in chunk])
        statement = statements.lock_deliveries(dialect, len(rows))
        existing.update(tuple(row) for row in run(statement, statement.parameters(rows)))
    kept: list[AttemptRecord] = []
    gone: list[AttemptRecord] = []
    for record in records:
        found = (record.delivery_id, record.event_id, record.destination) in existing
        (kept if found else gone).append(record)
    return kept, gone


def _health_rows(records: list[AttemptRecord]) -> list[dict[str, Any]]:
    """One row per destination, in name order (so that concurrent forwarders lock the rows
    in the same order): its last success and failure in `records`, and the failures after
    that success (or all of them)."""
    rows: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.attempted_at):
        row = rows.setdefault(
            record.destination,
            {
                "destination": record.destination,
                "last_success_at": None,
                "last_failure_at": None,
                "consecutive_failures": 0,
            },
        )
        if record.state is DeliveryState.DELIVERED:
            row["last_success_at"] = record.attempted_at
            row["consecutive_failures"] = 0
        else:
            row["last_failure_at"] = record.attempted_at
            row["consecutive_failures"] += 1
    return [rows[name] for name in sorted(rows)]


def release_claims(run: Run, dialect: Dialect, owner: str, ids: list[int]) -> None:
    """Hand unsent claims back at once, so a graceful stop leaves nothing waiting on a lease."""
    for chunk in _chunks(ids):
        rows = _padded([{"id": delivery_id, "owner": owner} for delivery_id in chunk])
        statement = statements.release_claims(dialect, len(rows))
        run(statement, statement.parameters(rows))


def _padded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` made up to a power of two by repeating the last, for statements that name
    each row's delivery, where a repeat changes nothing: a handful of lengths to compile
    rather than one per length."""
    size = 1 << (len(rows) - 1).bit_length()
    return rows + rows[-1:] * (size - len(rows))


def _chunks(items: list[T]) -> list[list[T]]:
    """Pieces of at most CHUNK: each statement is compiled once per length, and a backlog
    of outcomes (after the database was away) must not make one statement too large."""
    return [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]


def replay_conditions(which: EventFilter, destination: Destination) -> list[Any]:
    """The events of `which` that `destination` wants (by their type and outcome as stored)."""
    wanted = [*event_conditions(which)]
    if destination.event_types is not None:
        wanted.append(events.c.type.in_(sorted(destination.event_types)))
    if destination.wanted_outcomes != EVERY_OUTCOME:
        wanted.append(events.c.outcome.in_(sorted(destination.wanted_outcomes)))
    return wanted


async def replay_events(
    connection: AsyncConnection,
    which: EventFilter,
    now: datetime,
    destinations: Sequence[Destination],
    target_url: str | None = None,
) -> dict[str, int]:
    """Queue a new delivery of every matching event to each of `destinations` whose filters
    it passes (by its type and outcome as stored), to `target_url` instead of the
    destination's URL if given; how many, by destination. Each queued pair's dead letters
    become `replayed` at once: a retry is in flight, and nobody should replay them twice."""
    queued: dict[str, int] = {}
    for destination in destinations:
        selected = sa.select(
            events.c.id,
            sa.literal(destination.name, sa.Text),
            sa.literal(DeliveryState.PENDING.value),
            sa.literal(target_url, sa.Text),
            sa.literal(now, deliveries.c.next_attempt_at.type),
            sa.literal(now, deliveries.c.created_at.type),
        ).where(*replay_conditions(which, destination))
        # On PostgreSQL, an event a prune has locked is waited for, then skipped if it went:
        # without the lock the new row's foreign key would fail the whole replay.
        selected = selected.with_for_update(read=True, key_share=True, of=events)
        inserted = await connection.scalars(
            sa.insert(deliveries)
            .from_select(
                ["event_id", "destination", "state", "target_url", "next_attempt_at", "created_at"],
                selected,
            )
            .returning(deliveries.c.event_id)
        )
        event_ids = list(inserted)
        for start in range(0, len(event_ids), REPLAYED_CHUNK):
            await connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.event_id.in_(event_ids[start : start + REPLAYED_CHUNK]),
                    deliveries.c.destination == destination.name,
                    deliveries.c.target_url.is_not_distinct_from(sa.literal(target_url, sa.Text)),
                    deliveries.c.state == DeliveryState.DEAD.value,
                )
                .values(state=DeliveryState.REPLAYED.value)
            )
        if event_ids:
            queued[destination.name] = len(event_ids)
    return queued


# Event IDs a statement names when a replay marks dead letters replayed: the actions replay
# 500 events a transaction, and 500 parameters are far inside both backends' limits.
REPLAYED_CHUNK = 500
