"""Pages of a listing: cursors that continue where the last page ended (over an index,
never an OFFSET), and rows made ready for JSON."""

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from receiver.exceptions import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode()


def decode_cursor(cursor: str, *kinds: type[str] | type[int]) -> list[Any]:
    """The values `encode_cursor` wrote, one of each of `kinds` in turn. A cursor is outside
    input: a value of another type, text holding NUL or an integer no column holds was a 500
    (from `int()`, or the database), and is refused like any other cursor not given out."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        values = None
    if not (
        isinstance(values, list)
        and len(values) == len(kinds)
        and all(_is_a(value, kind) for value, kind in zip(values, kinds, strict=True))
    ):
        raise InvalidRequestError("cursor: not one this service gave out")
    return values


# The largest ID a column holds (a signed 64-bit BIGINT on PostgreSQL, SQLite's INTEGER).
MAX_ID = 2**63 - 1


def _is_a(value: Any, kind: type[str] | type[int]) -> bool:
    if kind is str:
        return isinstance(value, str) and "\x00" not in value
    return type(value) is int and 0 <= value <= MAX_ID


def parse_moment(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidRequestError("cursor: not one this service gave out") from None


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    # Column names arrive as SQLAlchemy's str subclass, which orjson refuses as keys.
    return {
        str(key): value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }
