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


def decode_cursor(cursor: str, length: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != length:
        raise InvalidRequestError("cursor: not one this service gave out")
    return values


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
