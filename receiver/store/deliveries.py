"""The outbox, as the forwarder uses it: claim, record (settling dead letters), release.

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

from sqlalchemy.engine import Dialect

from receiver.model import is_operational_id
from receiver.store import statements
from receiver.store.destination_states import BY_GONE
from receiver.store.statements import Run
from receiver.tracing.carriers import Carrier


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


# Not stored: how listings show a pending delivery whose destination is no longer configured,
# and one whose destination is disabled (`store.destination_states`).
ORPHANED = "orphaned"
DISABLED = "disabled"


def shown_state(
    state: str, destination: str, configured: Collection[str], disabled: Collection[str] = ()
) -> str:
    """A delivery's state as operators see it: pending, but orphaned when nothing will send
    it until its destination is configured again, and disabled when nothing will until its
    destination is enabled (orphaned first: enabling alone would not send it)."""
    if state != DeliveryState.PENDING:
        return state
    if destination not in configured:
        return ORPHANED
    return DISABLED if destination in disabled else state


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    destination: str
    event_id: str
    attempts_made: int
    target_url: str | None
    body: bytes
    # The event's trace context (its ingest span); whether a replay queued it, and the
    # replay's own context when it was traced.
    trace: Carrier | None = None
    replayed: bool = False
    replay_trace: Carrier | None = None


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
# The answer of a subscriber retired for good (Standard Webhooks): its destination is
# disabled, and the delivery dead-lettered as any other 4xx.
GONE = 410
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
    bodies: dict[str, tuple[bytes, Carrier | None]] = {}
    for chunk in _chunks(sorted({row[1] for row in rows})):
        wanted = _padded([{"id": event_id} for event_id in chunk])
        statement = statements.select_bodies(dialect, len(wanted))
        found = run(statement, statement.parameters(wanted))
        bodies.update(
            (event_id, (bytes(body), _carrier(traceparent, tracestate)))
            for event_id, body, traceparent, tracestate in found
        )
    return [
        ClaimedDelivery(
            delivery_id,
            destination,
            event_id,
            attempts,
            target_url,
            *bodies[event_id],
            replayed=replay_traceparent is not None,
            replay_trace=_carrier(replay_traceparent, None),
        )
        for delivery_id, event_id, attempts, target_url, _, replay_traceparent in rows
    ]


def _carrier(traceparent: str | None, tracestate: str | None) -> Carrier | None:
    return Carrier(traceparent, tracestate) if traceparent else None


def record_attempts(
    run: Run, dialect: Dialect, owner: str, records: list[AttemptRecord], now: datetime
) -> list[AttemptRecord]:
    """Write each attempt, move its delivery on if this owner still holds the lease, and
    fold the attempts into their destinations' health. Returns the records whose delivery
    is gone (deleted while its attempt was in flight): their attempts can never be written,
    so they are left out rather than failing, for ever, the transaction they share with
    every other outcome and claim.

    A finished delivery's `finished_at` is `now`, when its outcome is written (the attempt
    row keeps when the attempt began): a dry run's `dead_by` then leaves out a delivery
    whose last attempt was in flight across its count and was recorded dead after it."""
    finished = {DeliveryState.DELIVERED, DeliveryState.DEAD}
    if records:
        statements.run_rows(run, dialect, statements.update_health, _health_rows(records))
    records, gone = _split_by_existence(run, dialect, records)
    written: list[Sequence[Any]] = []
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
                "finished_at": now if record.state in finished else None,
                "last_status_code": record.status_code,
                "last_error": record.error_class,
            }
            for record in chunk
        ]
        outcomes = _padded(outcomes)
        statement = statements.record_outcomes(dialect, len(outcomes))
        written.extend(run(statement, statement.parameters(outcomes)))
        _settle_pairs(run, dialect, chunk)
    _count_dead_letters(run, dialect, written, now)
    return gone


def _settle_pairs(run: Run, dialect: Dialect, records: list[AttemptRecord]) -> None:
    """In the outcomes' transaction: a delivered record recovers its pair's dead letters
    (and the replays that led to it); one gone dead makes its pair's dead letters that a
    newer delivery superseded replayed (itself too, if a newer one was queued while it was
    retried), so that a pair counts once however often it was replayed. Only those two
    outcomes pay for a statement; most batches are all delivered, so one."""
    for state, build in (
        (DeliveryState.DELIVERED, statements.settle_recovered),
        (DeliveryState.DEAD, statements.settle_replayed),
    ):
        pairs = [
            {
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


# A destination's dead letters are gathered in the condition `dead:<destination>`, a window
# the operational checks close into one event (see `store.conditions`).
DEAD_LETTERS = "dead:"


def dead_letters_condition(destination: str) -> str:
    return DEAD_LETTERS + destination


def _count_dead_letters(
    run: Run, dialect: Dialect, written: list[Sequence[Any]], now: datetime
) -> None:
    """Count the deliveries gone dead into their destinations' windows, which the
    operational checks close into one event each (receiver.operational): counted here, in
    the outcomes' own transaction, from the outcomes written (`written`: id, event_id,
    destination, state), each is counted once, whichever forwarder recorded it, and never
    one whose lease another forwarder had taken over."""
    # Not the service's own events: a subscriber of them that is down would otherwise be
    # told, once a window, that their deliveries to it died, each telling a new one to die.
    # Its trouble reaches people as its backlog and its pause.
    dead: dict[str, list[int]] = {}
    for delivery_id, event_id, destination, state in written:
        if state == DeliveryState.DEAD.value and not is_operational_id(event_id):
            dead.setdefault(destination, []).append(delivery_id)
    rows = [
        {
            "name": dead_letters_condition(name),
            "started_at": now,
            "count": len(ids),
            # Where a new window's first dead letters are looked for (`store.conditions`).
            "detail": str(min(ids)),
        }
        for name, ids in sorted(dead.items())  # in name order: replicas lock rows alike
    ]
    if rows:
        statements.run_rows(run, dialect, statements.add_to_dead_letter_windows, rows)


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


def disabled_names(run: Run, dialect: Dialect) -> frozenset[str]:
    """The destinations disabled (`store.destination_states`)."""
    statement = statements.select_disabled(dialect)
    return frozenset(row[0] for row in run(statement, statement.parameters([{}])))


def gone_from_destination(record: AttemptRecord) -> bool:
    """A 410 from the destination's own URL: one from a replay's `target_url` (somewhere
    else, this once) says nothing of the destination."""
    return record.status_code == GONE and record.target_url is None


def disable_gone_destinations(
    run: Run, dialect: Dialect, records: list[AttemptRecord], now: datetime
) -> list[str]:
    """Disable each destination that answered one of `records` 410 Gone (whoever holds
    the delivery's lease: the answer is the destination's); the names this call disabled."""
    names = sorted({record.destination for record in records if gone_from_destination(record)})
    rows = [
        {"destination": name, "disabled_at": now, "disabled_by": BY_GONE, "reason": "410 Gone"}
        for name in names
    ]
    return [
        row[0] for row in statements.run_rows(run, dialect, statements.disable_destinations, rows)
    ]


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
