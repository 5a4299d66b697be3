"""The ingest path's SQL: SQLAlchemy constructs, compiled once per backend and row count.

Ingest writes many rows per transaction, and SQLAlchemy's per-execution work (building,
caching and binding a statement) costs more than SQLite's own work on those rows. So the
statements are still written once, in SQLAlchemy, for every backend, but compiled ahead to
plain SQL with positional parameters, and values are converted with each column type's own
bind processor. A caller then hands SQL and parameters straight to the driver.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from receiver.ingest.envelope import TERMINAL_STATUSES
from receiver.store.tables import deliveries, events, records

EVENT_COLUMNS = tuple(column.name for column in events.c)
RECORD_COLUMNS = tuple(column.name for column in records.c)
DELIVERY_COLUMNS = ("event_id", "state", "next_attempt_at", "created_at")


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


_compiled: dict[tuple[type[Dialect], str, int], Prepared] = {}


def _prepared(dialect: Dialect, name: str, rows: int) -> Prepared:
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
        where=sa.and_(*not_terminal, records.c.updated_at <= upsert.excluded.updated_at)
        | (records.c.last_event_id == upsert.excluded.last_event_id),
    ).returning(records.c.last_event_id)


def _mark_stale(_: Any, rows: int) -> Any:
    ids = [sa.bindparam(f"id__{i}", type_=events.c.id.type) for i in range(rows)]
    return (
        sa.update(events).where(events.c.id.in_(ids)).values(outcome=sa.literal_column("'stale'"))
    )


def _insert_deliveries(_: Any, rows: int) -> Any:
    return sa.insert(deliveries).values(_values(deliveries, DELIVERY_COLUMNS, rows))


_BUILDERS: dict[str, Callable[[Any, int], Any]] = {
    "insert_events": _insert_events,
    "upsert_records": _upsert_records,
    "mark_stale": _mark_stale,
    "insert_deliveries": _insert_deliveries,
}
