"""Records the product registers, and the listing of records by status, reference and age.

A task is registered when the product submits it to Rivya, before any event: its record
starts `queued`, with no generation time, so that whatever Rivya reports later (by webhook
or through reconciliation) is newer and applies under the usual never-regress rule.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.exceptions import ConflictError
from receiver.model import GENERATION_STATUSES, TERMINAL_STATUSES
from receiver.store.pages import Page, decode_cursor, encode_cursor, jsonable, parse_moment
from receiver.store.queries import get_record
from receiver.store.tables import records

MAX_REFERENCE_CHARS = 128
LISTED_COLUMNS = tuple(column for column in records.c if column.name != "result_urls")


async def register_task(
    connection: AsyncConnection, task_id: str, reference: str | None, now: datetime
) -> tuple[dict[str, Any], bool]:
    """The task's record, and whether this call created it. A record that exists (from an
    earlier registration, or from Rivya) is left as it is, but takes `reference` if it has
    none; a different reference than its own is a conflict."""
    insert = dialect_insert(connection, records).values(
        task_id=task_id,
        status="queued",
        result_urls=[],
        changed_at=now,
        reference=reference,
        registered_at=now,
    )
    created = (
        await connection.execute(
            insert.on_conflict_do_nothing(index_elements=[records.c.task_id]).returning(
                records.c.task_id
            )
        )
    ).first() is not None
    record = await get_record(connection, task_id)
    if created or reference is None or record["reference"] == reference:
        return record, created
    if record["reference"] is not None:
        raise ConflictError(f"task {task_id!r} is registered with another reference")
    await connection.execute(
        sa.update(records)
        .where(records.c.task_id == task_id, records.c.reference.is_(None))
        .values(reference=reference, registered_at=now)
    )
    return await get_record(connection, task_id), False


def dialect_insert(connection: AsyncConnection, table: sa.Table) -> Any:
    """The backend's own INSERT, which has ON CONFLICT."""
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    return module.insert(table)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    status: str | None = None
    reference: str | None = None
    # Only records not terminal and unchanged for this long: what reconciliation looks at.
    stale_after: timedelta | None = None
    error_code: str | None = None
    model: str | None = None
    since: datetime | None = None  # on changed_at, inclusive
    until: datetime | None = None  # on changed_at, exclusive
    # A task ID or a reference, exactly (both are indexed).
    search: str | None = None


def record_conditions(which: RecordFilter, now: datetime) -> list[Any]:
    conditions: list[Any] = []
    for column, value in (
        (records.c.status, which.status),
        (records.c.reference, which.reference),
        (records.c.error_code, which.error_code),
        (records.c.model, which.model),
    ):
        if value is not None:
            conditions.append(column == value)
    if which.stale_after is not None:
        conditions.extend(stale_conditions(which.stale_after, now))
    if which.since is not None:
        conditions.append(records.c.changed_at >= which.since)
    if which.until is not None:
        conditions.append(records.c.changed_at < which.until)
    if which.search is not None:
        conditions.append(
            (records.c.task_id == which.search) | (records.c.reference == which.search)
        )
    return conditions


def stale_conditions(stale_after: timedelta, now: datetime) -> list[Any]:
    """Not terminal, and unchanged since `stale_after` before `now`. Written as the statuses
    that are not terminal (IN, not NOT IN), so that the (status, changed_at) index is read
    in two short ranges, not whole: 471 ms against a few on a million records (measured)."""
    return [
        records.c.status.in_(sorted(GENERATION_STATUSES - TERMINAL_STATUSES)),
        records.c.changed_at <= now - stale_after,
    ]


async def count_stale(connection: AsyncConnection, after: timedelta, now: datetime) -> int:
    query = sa.select(sa.func.count()).select_from(records).where(*stale_conditions(after, now))
    return int((await connection.execute(query)).scalar_one())


async def list_records(
    connection: AsyncConnection,
    which: RecordFilter,
    now: datetime,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """Most recently changed first; `cursor` continues from the previous page's end. Without
    result URLs: they can be signed links, shown on a record's own page alone."""
    query = (
        sa.select(*LISTED_COLUMNS)
        .where(*record_conditions(which, now))
        .order_by(records.c.changed_at.desc(), records.c.task_id.desc())
    )
    if cursor is not None:
        changed_at, task_id = decode_cursor(cursor, str, str)
        query = query.where(
            sa.tuple_(records.c.changed_at, records.c.task_id)
            < sa.tuple_(
                sa.literal(parse_moment(changed_at), records.c.changed_at.type), sa.literal(task_id)
            )
        )
    rows = [row._asdict() for row in await connection.execute(query.limit(limit))]
    last = rows[-1] if len(rows) == limit else None
    next_cursor = encode_cursor(last["changed_at"].isoformat(), last["task_id"]) if last else None
    return Page([jsonable(row) for row in rows], next_cursor)
