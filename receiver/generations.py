"""Reading a Rivya generation object into a `Generation`, and the field readers it shares with
the envelope parser.

A generation comes from two places: a webhook's `data` (`receiver.ingest.envelope`) and
Rivya's API, asked by reconciliation (`receiver.reconcile`). It lives here, beside
`receiver.model`, so that both reach it going down the tree.

Total by design: every reader returns a value or raises `Unparseable`, whose reason is a
short code of ours, safe to log, never a stray exception. What they return can be stored on
every backend: times are aware and in UTC (a date at the edge of the range whose offset
would carry it past year 9999 or before year 1 is unreadable, not an `OverflowError`), and
text holds no NUL character, which PostgreSQL's text columns cannot store.
"""

from datetime import UTC, datetime
from typing import Any, TypeGuard

from receiver.model import GENERATION_STATUSES, Generation

# Event and task IDs, and event types, key rows and indexes: PostgreSQL's btree takes an entry
# of up to about 2.7 kB, and 256 characters are at most 1 KiB of UTF-8. Rivya's are far
# shorter.
MAX_ID_CHARS = 256
NUL = "\x00"
# A message is for people: a NUL in one is shown as this rather than cost the record its
# failure (the raw body keeps it as sent).
NUL_SHOWN_AS = "\N{REPLACEMENT CHARACTER}"


class Unparseable(Exception):  # noqa: N818 - a verdict on a value, not a failure of ours
    """`reason` is one of the quarantine reasons: a short code, safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_generation(data: Any, expected_status: str | None = None) -> Generation:
    """`data` as a generation (with `expected_status`, if given, as its status)."""
    if not isinstance(data, dict):
        raise Unparseable("missing_generation")
    task_id = data.get("id")
    if not is_key(task_id):
        raise Unparseable("invalid_task_id")
    _storable(task_id)
    status = data.get("status")
    if not isinstance(status, str) or status not in GENERATION_STATUSES:
        raise Unparseable("invalid_status")
    if expected_status is not None and status != expected_status:
        raise Unparseable("status_mismatch")
    updated_at = read_timestamp(data, "updated_at")
    if updated_at is None:
        raise Unparseable("invalid_updated_at")
    error = _object(data, "error", "invalid_error")
    message = read_text(error, "message", "invalid_error", strict=False) if error else None
    return Generation(
        task_id=task_id,
        status=status,
        model=read_text(data, "model", "invalid_model"),
        reserved_credits=_credits(data, "reserved_credits"),
        final_credits=_credits(data, "final_credits"),
        result_urls=_result_urls(_object(data, "result", "invalid_result")),
        error_code=read_text(error, "code", "invalid_error") if error else None,
        error_message=message.replace(NUL, NUL_SHOWN_AS) if message else message,
        updated_at=updated_at,
    )


def is_key(value: Any) -> TypeGuard[str]:
    """Text of a length that can key rows (its characters are checked apart)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def read_text(obj: dict[str, Any], key: str, reason: str, strict: bool = True) -> str | None:
    """`obj[key]` if it is text or absent; `reason` if it is something else. Strict text (an
    identifier, a URL) must also be `_storable`: changing it would make it name something else."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unparseable(reason)
    return _storable(value) if strict else value


def _storable(text: str) -> str:
    """`text` if every backend can keep it as it is: `invalid_characters` if it holds a NUL."""
    if NUL in text:
        raise Unparseable("invalid_characters")
    return text


def read_timestamp(obj: dict[str, Any], key: str) -> datetime | None:
    """An ISO 8601 time with an offset, in UTC; `invalid_{key}` if it is not one."""
    reason = f"invalid_{key}"
    text = read_text(obj, key, reason, strict=False)  # fromisoformat refuses a NUL
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise Unparseable(reason)
        # 9999-12-31T23:59:59-01:00 is a valid time that UTC cannot hold in a datetime.
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Unparseable(reason) from None


def _result_urls(result: dict[str, Any] | None) -> tuple[str, ...]:
    if result is None:
        return ()
    urls = result.get("urls")
    if urls is None:
        primary = read_text(result, "primary_url", "invalid_result")
        return (primary,) if primary else ()
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise Unparseable("invalid_result")
    return tuple(_storable(url) for url in urls)


def _object(obj: dict[str, Any], key: str, reason: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise Unparseable(reason)
    return value


def _credits(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int in Python; a credit count is not.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise Unparseable("invalid_credits")
    return value
