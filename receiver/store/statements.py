"""The hot paths' SQL (ingest, and the forwarder's claims and outcomes): SQLAlchemy
constructs, compiled once per backend and row count.

Both write many rows per transaction, and SQLAlchemy's per-execution work (building,
caching and binding a statement) costs more than SQLite's own work on those rows. So the
statements are still written once, in SQLAlchemy, for every backend, but compiled ahead to
plain SQL with positional parameters, and values are converted with each column type's own
bind processor. A caller then hands SQL and parameters straight to the driver.

A statement is compiled only for the row counts in `SIZES`, and `run_rows` sends any number
of rows as pieces of those sizes. Compiled for every row count, as they were, batches of
every size from 1 to 256 held 185 MiB of compiled events and records statements, and their
outboxes (two destinations, up to 512 rows) 249 MiB more (measured); and each new size was
compiled on the event loop, holding the write lock (tens of ms each, 0.44 s seen under load
for 256 rows). `prepare_statements` compiles the bounded set when a write connection opens.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from receiver.model import TERMINAL_STATUSES
from receiver.store.tables import (
    GENERATION_COLUMNS,
    attempts,
    conditions,
    deliveries,
    destination_health,
    disabled_destinations,
    events,
    records,
)

EVENT_COLUMNS = tuple(column.name for column in events.c)
RECORD_COLUMNS = GENERATION_COLUMNS
DELIVERY_COLUMNS = ("event_id", "destination", "state", "next_attempt_at", "created_at")
ATTEMPT_COLUMNS = ("delivery_id", "attempted_at", "duration_ms", "status_code", "error_class")
HEALTH_COLUMNS = tuple(column.name for column in destination_health.c)
# What a finished attempt sets on its delivery; next_attempt_at is kept when given none.
OUTCOME_COLUMNS = ("state", "attempts", "finished_at", "last_status_code", "last_error")


@dataclass(frozen=True, slots=True)
class Prepared:
    """SQL text, and where each of its parameters comes from: (row, column, converter)."""

    sql: str
    slots: tuple[tuple[int, str, Callable[[Any], Any] | None], ...]

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> tuple[Any, ...]:
        return tuple(
            convert(rows[row][column]) if convert else rows[row][column]
            for row, column, convert in self.slots
        )


Builder = Callable[[Dialect, int], Prepared]
# Sends prepared SQL with its parameters to the database, in the caller's transaction.
Run = Callable[[Prepared, tuple[Any, ...]], Sequence[Sequence[Any]]]

# The largest statement, in rows. Past a few dozen rows a bigger statement saves little (the
# rows' own work dominates), and 64 keeps the largest well inside both backends' parameter
# limits (SQLite's 32,766, asyncpg's 32,767) for the widest table, events (10 columns).
MAX_ROWS = 64
# The row counts a statement is compiled for: 7 of them, from 1 to MAX_ROWS.
SIZES = tuple(1 << bit for bit in range(MAX_ROWS.bit_length()))


def pieces(count: int) -> list[int]:
    """How `count` rows are sent: as many pieces of MAX_ROWS as fit, then one piece for
    each binary digit of the rest (a batch of 200 is 64, 64, 64, 8); at most
    count // MAX_ROWS + 6 statements, each of a size in SIZES."""
    whole, rest = divmod(count, MAX_ROWS)
    return [MAX_ROWS] * whole + [size for size in reversed(SIZES) if rest & size]


def run_rows(
    run: Run, dialect: Dialect, build: Builder, rows: Sequence[Mapping[str, Any]]
) -> list[Sequence[Any]]:
    """Send `rows` through `build`'s statement in pieces (see `pieces`), in order, in the
    caller's transaction; what the pieces return, together. For statements whose rows are
    independent of each other: inserts, and upserts of distinct keys."""
    returned: list[Sequence[Any]] = []
    start = 0
    for size in pieces(len(rows)):
        statement = build(dialect, size)
        returned.extend(run(statement, statement.parameters(rows[start : start + size])))
        start += size
    return returned


def insert_events(dialect: Dialect, rows: int) -> Prepared:
    """New events; returns the IDs that were not stored before."""
    return _prepared(dialect, "insert_events", rows)


def upsert_records(dialect: Dialect, rows: int) -> Prepared:
    """Apply each generation unless its record is terminal or newer; returns the event IDs
    that applied. Re-applying the event a record already reflects is harmless (reprocessing)."""
    return _prepared(dialect, "upsert_records", rows)


def mark_stale(dialect: Dialect, rows: int) -> Prepared:
    return _prepared(dialect, "mark_stale", rows)


def insert_deliveries(dialect: Dialect, rows: int) -> Prepared:
    return _prepared(dialect, "insert_deliveries", rows)


def claim_deliveries(dialect: Dialect) -> Prepared:
    """Lease up to `limit` due deliveries of one destination to `owner`. Parameters (one
    row): destination, owner, now, lease_expires_at, limit. Returns id, event_id, attempts,
    target_url, next_attempt_at, traceparent."""
    return _prepared(dialect, "claim_deliveries", 1)


def select_bodies(dialect: Dialect, rows: int) -> Prepared:
    """The body and trace context of each event named (id a row)."""
    return _prepared(dialect, "select_bodies", rows)


def insert_attempts(dialect: Dialect, rows: int) -> Prepared:
    return _prepared(dialect, "insert_attempts", rows)


def record_outcomes(dialect: Dialect, rows: int) -> Prepared:
    """Move each delivery on by its attempt's outcome (id, the OUTCOME_COLUMNS and
    next_attempt_at a row), if `owner` still holds its lease; the lease ends. Returns the
    id, event_id, destination and state of each delivery moved on."""
    return _prepared(dialect, "record_outcomes", rows)


def update_health(dialect: Dialect, rows: int) -> Prepared:
    """Fold each destination's latest attempts into its health (HEALTH_COLUMNS a row, with
    the failures since the row's own success, or all of them if it has none)."""
    return _prepared(dialect, "update_health", rows)


def release_claims(dialect: Dialect, rows: int) -> Prepared:
    """End `owner`'s leases of the deliveries given (id a row; owner in row 0)."""
    return _prepared(dialect, "release_claims", rows)


def lock_deliveries(dialect: Dialect, rows: int) -> Prepared:
    """The id, event_id and destination of those of the deliveries given (id a row) that
    still exist, each locked against its deletion until the transaction ends (on PostgreSQL;
    on SQLite the writer's lock already holds off every other writer)."""
    return _prepared(dialect, "lock_deliveries", rows)


def settle_recovered(dialect: Dialect, rows: int) -> Prepared:
    """Mark `recovered` every dead or replayed delivery of each pair given (event_id,
    destination, target_url a row): the pair has now been delivered."""
    return _prepared(dialect, "settle_recovered", rows)


def settle_replayed(dialect: Dialect, rows: int) -> Prepared:
    """Mark `replayed` every dead delivery of each pair given (event_id, destination,
    target_url a row) that has a newer delivery of its pair: the older dead letters of the
    delivery that has just gone dead, and that delivery itself if a newer one was queued
    while it was retried. A pair keeps at most one dead letter, its newest delivery."""
    return _prepared(dialect, "settle_replayed", rows)


def add_to_dead_letter_windows(dialect: Dialect, rows: int) -> Prepared:
    """Add each destination's new dead letters to its window's count (name, started_at,
    count, detail a row: the lowest dead delivery ID), opening the window at `started_at`
    if none is open; the window keeps the lowest ID it was given."""
    return _prepared(dialect, "add_to_dead_letter_windows", rows)


def select_disabled(dialect: Dialect) -> Prepared:
    """The destinations disabled (one column), read in every claiming transaction: every
    forwarder obeys a destination's state from its next claim on."""
    return _prepared(dialect, "select_disabled", 1)


def disable_destinations(dialect: Dialect, rows: int) -> Prepared:
    """Disable each destination named (destination, disabled_at, disabled_by, reason a row)
    unless it is already; returns the names this statement disabled, so that only the
    process that disabled one says so."""
    return _prepared(dialect, "disable_destinations", rows)


def superseded() -> sa.Exists:
    """Conditions on a delivery: a newer delivery of its pair (event, destination, target
    URL) exists. A dead letter that is superseded is `replayed`, never `dead`."""
    later = deliveries.alias("later")
    return sa.exists().where(
        later.c.event_id == deliveries.c.event_id,
        later.c.destination == deliveries.c.destination,
        later.c.target_url.is_not_distinct_from(deliveries.c.target_url),
        later.c.id > deliveries.c.id,
    )


def prepare_statements(dialect: Dialect) -> None:
    """Compile every statement at every size in SIZES for `dialect` (a tenth of a second),
    so that no transaction compiles one."""
    for name in _BUILDERS:
        for rows in _SIZES_OF.get(name, SIZES):
            _prepared(dialect, name, rows)


# Keyed by a closed set: the dialects, the statements, and SIZES (see `_prepared`).
_compiled: dict[tuple[type[Dialect], str, int], Prepared] = {}


def _prepared(dialect: Dialect, name: str, rows: int) -> Prepared:
    if rows not in _SIZES_OF.get(name, SIZES):
        raise ValueError(f"{name} is compiled for {SIZES} rows, not {rows}: see run_rows")
    key = (type(dialect), name, rows)
    if key not in _compiled:
        _compiled[key] = _compile(dialect, name, rows)
    return _compiled[key]


def _compile(dialect: Dialect, name: str, rows: int) -> Prepared:
    statement = _BUILDERS[name](postgresql if dialect.name == "postgresql" else sqlite, rows)
    compiled = statement.compile(dialect=dialect)
    if compiled.positiontup is None:
        raise ValueError(f"{dialect.paramstyle} is not a positional paramstyle")
    slots = []
    for key in compiled.positiontup:
        column, _, row = key.rpartition("__")
        column_type = compiled.binds[key].type.dialect_impl(dialect)
        slots.append((int(row), column, column_type.bind_processor(dialect)))
    return Prepared(str(compiled), tuple(slots))


def _values(table: sa.Table, columns: tuple[str, ...], rows: int) -> list[dict[str, Any]]:
    return [
        {c: sa.bindparam(f"{c}__{i}", type_=table.c[c].type) for c in columns} for i in range(rows)
    ]


def _insert_events(dialect: Any, rows: int) -> Any:
    return (
        dialect.insert(events)
        .values(_values(events, EVENT_COLUMNS, rows))
        .on_conflict_do_nothing(index_elements=[events.c.id])
        .returning(events.c.id)
    )


def _upsert_records(dialect: Any, rows: int) -> Any:
    upsert = dialect.insert(records).values(_values(records, RECORD_COLUMNS, rows))
    not_terminal = [records.c.status != sa.literal_column(f"'{s}'") for s in TERMINAL_STATUSES]
    return upsert.on_conflict_do_update(
        index_elements=[records.c.task_id],
        set_={c: upsert.excluded[c] for c in RECORD_COLUMNS if c != "task_id"},
        # A registered record has no generation time yet: any report is newer.
        where=sa.and_(
            *not_terminal,
            records.c.updated_at.is_(None) | (records.c.updated_at <= upsert.excluded.updated_at),
        )
        | (records.c.last_event_id == upsert.excluded.last_event_id),
    ).returning(records.c.last_event_id)


def _mark_stale(_: Any, rows: int) -> Any:
    ids = _ids(events.c.id, rows)
    return (
        sa.update(events).where(events.c.id.in_(ids)).values(outcome=sa.literal_column("'stale'"))
    )


def _insert_deliveries(_: Any, rows: int) -> Any:
    return sa.insert(deliveries).values(_values(deliveries, DELIVERY_COLUMNS, rows))


def _claim_deliveries(_: Any, __: int) -> Any:
    now = sa.bindparam("now__0", type_=_DATETIME)
    destination = sa.bindparam("destination__0", type_=sa.Text)
    unleased = deliveries.c.lease_expires_at.is_(None) | (deliveries.c.lease_expires_at < now)
    due = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.destination == destination,
            deliveries.c.state == sa.literal_column("'pending'"),
            unleased,
            deliveries.c.next_attempt_at <= now,
            # Read again by the claim itself: on PostgreSQL each statement sees what was
            # committed when it began, so a disable committed after the transaction's
            # `select_disabled` still stops this claim.
            ~sa.exists().where(disabled_destinations.c.destination == destination),
        )
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(sa.bindparam("limit__0", type_=sa.Integer))
        # Written into the SQL: the plain SQL this module makes has no room for parameters
        # SQLAlchemy adds itself (SQLite's compiler adds one for OFFSET otherwise).
        .offset(sa.literal_column("0"))
        .with_for_update(skip_locked=True)
    )
    # The lease is checked again for PostgreSQL, where another forwarder may have taken the
    # row since; the state is not, so that SQLite looks the rows up by ID rather than
    # walking the state index through every pending delivery (measured: 20x slower).
    return (
        sa.update(deliveries)
        .where(deliveries.c.id.in_(due.scalar_subquery()), unleased)
        .values(
            lease_owner=_owner(),
            lease_expires_at=sa.bindparam("lease_expires_at__0", type_=_DATETIME),
        )
        .returning(
            deliveries.c.id,
            deliveries.c.event_id,
            deliveries.c.attempts,
            deliveries.c.target_url,
            deliveries.c.next_attempt_at,
            deliveries.c.traceparent,
        )
    )


def _select_bodies(_: Any, rows: int) -> Any:
    ids = _ids(events.c.id, rows)
    return sa.select(events.c.id, events.c.body, events.c.traceparent, events.c.tracestate).where(
        events.c.id.in_(ids)
    )


def _insert_attempts(_: Any, rows: int) -> Any:
    return sa.insert(attempts).values(_values(attempts, ATTEMPT_COLUMNS, rows))


def _record_outcomes(_: Any, rows: int) -> Any:
    ids = _ids(deliveries.c.id, rows)

    def per_row(column: str) -> Any:
        return sa.case(
            *(
                (
                    deliveries.c.id == ids[i],
                    sa.bindparam(f"{column}__{i}", type_=deliveries.c[column].type),
                )
                for i in range(rows)
            )
        )

    return (
        sa.update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.lease_owner == _owner())
        .values(
            {column: per_row(column) for column in OUTCOME_COLUMNS}
            | {
                "next_attempt_at": sa.func.coalesce(
                    per_row("next_attempt_at"), deliveries.c.next_attempt_at
                ),
                "lease_owner": sa.null(),
                "lease_expires_at": sa.null(),
            }
        )
        .returning(
            deliveries.c.id, deliveries.c.event_id, deliveries.c.destination, deliveries.c.state
        )
    )


def _update_health(dialect: Any, rows: int) -> Any:
    upsert = dialect.insert(destination_health).values(
        _values(destination_health, HEALTH_COLUMNS, rows)
    )
    health, new = destination_health.c, upsert.excluded
    return upsert.on_conflict_do_update(
        index_elements=[health.destination],
        set_={
            "last_success_at": sa.func.coalesce(new.last_success_at, health.last_success_at),
            "last_failure_at": sa.func.coalesce(new.last_failure_at, health.last_failure_at),
            "consecutive_failures": sa.case(
                (
                    new.last_success_at.is_(None),
                    health.consecutive_failures + new.consecutive_failures,
                ),
                else_=new.consecutive_failures,
            ),
        },
    )


def _release_claims(_: Any, rows: int) -> Any:
    ids = _ids(deliveries.c.id, rows)
    return (
        sa.update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.lease_owner == _owner())
        .values(lease_owner=sa.null(), lease_expires_at=sa.null())
    )


def _lock_deliveries(_: Any, rows: int) -> Any:
    # FOR KEY SHARE: the weakest lock that holds off a DELETE; forwarders do not wait on
    # each other for it.
    return (
        sa.select(deliveries.c.id, deliveries.c.event_id, deliveries.c.destination)
        .where(deliveries.c.id.in_(_ids(deliveries.c.id, rows)))
        .with_for_update(read=True, key_share=True)
    )


def _settle_recovered(_: Any, rows: int) -> Any:
    return _settle(rows, ("dead", "replayed"), "recovered", [])


def _settle_replayed(_: Any, rows: int) -> Any:
    return _settle(rows, ("dead",), "replayed", [superseded()])


def _settle(rows: int, states: tuple[str, ...], to: str, only: list[Any]) -> Any:
    """Move the deliveries in `states` of each row's pair to `to` (`only` those). The pair's
    event IDs are listed on their own as well, so that both backends find the rows by the
    event_id index (a pair has a handful of deliveries) rather than by walking every dead
    one."""
    event_ids = [sa.bindparam(f"event_id__{i}", type_=sa.Text) for i in range(rows)]
    pairs = [
        sa.and_(
            deliveries.c.event_id == event_ids[i],
            deliveries.c.destination == sa.bindparam(f"destination__{i}", type_=sa.Text),
            deliveries.c.target_url.is_not_distinct_from(
                sa.bindparam(f"target_url__{i}", type_=sa.Text)
            ),
        )
        for i in range(rows)
    ]
    return (
        sa.update(deliveries)
        .where(
            deliveries.c.event_id.in_(event_ids),
            deliveries.c.state.in_([sa.literal_column(f"'{state}'") for state in states]),
            sa.or_(*pairs),
            *only,
        )
        .values(state=sa.literal_column(f"'{to}'"))
    )


def _add_to_dead_letter_windows(dialect: Any, rows: int) -> Any:
    upsert = dialect.insert(conditions).values(
        _values(conditions, ("name", "started_at", "count", "detail"), rows)
    )
    # The window's lowest dead delivery ID: outcomes are written in the order attempts end,
    # not the order deliveries were queued.
    # SQLite's MIN of two values is PostgreSQL's LEAST (its MIN is an aggregate only).
    smaller = sa.func.least if dialect is postgresql else sa.func.min
    lowest = smaller(
        sa.cast(conditions.c.detail, sa.BigInteger),
        sa.cast(upsert.excluded["detail"], sa.BigInteger),
    )
    return upsert.on_conflict_do_update(
        index_elements=[conditions.c.name],
        set_={
            "count": conditions.c.count + upsert.excluded["count"],
            "detail": sa.cast(lowest, sa.Text),
        },
    )


def _select_disabled(_: Any, __: int) -> Any:
    return sa.select(disabled_destinations.c.destination)


def _disable_destinations(dialect: Any, rows: int) -> Any:
    columns = ("destination", "disabled_at", "disabled_by", "reason")
    return (
        dialect.insert(disabled_destinations)
        .values(_values(disabled_destinations, columns, rows))
        .on_conflict_do_nothing(index_elements=[disabled_destinations.c.destination])
        .returning(disabled_destinations.c.destination)
    )


def _ids(column: sa.Column[Any], rows: int) -> list[Any]:
    """One `id` parameter a row, typed as `column`."""
    return [sa.bindparam(f"id__{i}", type_=column.type) for i in range(rows)]


def _owner() -> Any:
    return sa.bindparam("owner__0", type_=sa.Text)


_DATETIME = deliveries.c.lease_expires_at.type

# Statements of one row whatever the work (the claim's limit is a parameter).
_SIZES_OF = {"claim_deliveries": (1,), "select_disabled": (1,)}

_BUILDERS: dict[str, Callable[[Any, int], Any]] = {
    "insert_events": _insert_events,
    "upsert_records": _upsert_records,
    "mark_stale": _mark_stale,
    "insert_deliveries": _insert_deliveries,
    "claim_deliveries": _claim_deliveries,
    "select_bodies": _select_bodies,
    "insert_attempts": _insert_attempts,
    "record_outcomes": _record_outcomes,
    "update_health": _update_health,
    "release_claims": _release_claims,
    "lock_deliveries": _lock_deliveries,
    "settle_recovered": _settle_recovered,
    "settle_replayed": _settle_replayed,
    "add_to_dead_letter_windows": _add_to_dead_letter_windows,
    "select_disabled": _select_disabled,
    "disable_destinations": _disable_destinations,
}
