"""Parse a verified Rivya event body into what the store needs.

Total by design: any bytes give an `Event`. A body we cannot understand comes back with
a `quarantine_reason` (a short code of ours, safe to log) so that it is still stored,
since Rivya disables endpoints that keep refusing its deliveries. Unknown fields are
ignored; Rivya may add them at any time.
"""

from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson

from receiver.model import APPLIED_TYPES, GENERATION_STATUSES, Event, Generation

MAX_ID_CHARS = 256


class _Unparseable(Exception):  # noqa: N818 - private control flow, never escapes
    def __init__(self, reason: str) -> None:
        self.reason = reason


def parse_event(body: bytes, msg_id: str) -> Event:
    """`msg_id` (the `webhook-id` header) is the event ID when the body has none."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Event(event_id=msg_id, quarantine_reason="invalid_json")
    if not isinstance(envelope, dict):
        return Event(event_id=msg_id, quarantine_reason="not_an_object")
    event_id = envelope.get("id")
    if not _is_id(event_id):
        return Event(event_id=msg_id, quarantine_reason="invalid_event_id")
    event_type = envelope.get("type")
    if not isinstance(event_type, str):
        return Event(event_id=event_id, quarantine_reason="invalid_type")
    try:
        return Event(
            event_id=event_id,
            type=event_type,
            api_version=_str(envelope, "api_version", "invalid_api_version"),
            created_at=_timestamp(envelope, "created_at"),
            generation=(
                _generation(envelope.get("data"), APPLIED_TYPES[event_type])
                if event_type in APPLIED_TYPES
                else None
            ),
        )
    except _Unparseable as exc:
        return Event(event_id=event_id, type=event_type, quarantine_reason=exc.reason)


def parse_generation(data: Any) -> Generation:
    """A generation object alone, as Rivya's API returns it; ValueError, whose message is
    one of the quarantine reasons, if it is not one."""
    try:
        return _generation(data, None)
    except _Unparseable as exc:
        raise ValueError(exc.reason) from None


def _generation(data: Any, expected_status: str | None) -> Generation:
    if not isinstance(data, dict):
        raise _Unparseable("missing_generation")
    task_id = data.get("id")
    if not _is_id(task_id):
        raise _Unparseable("invalid_task_id")
    status = data.get("status")
    if not isinstance(status, str) or status not in GENERATION_STATUSES:
        raise _Unparseable("invalid_status")
    if expected_status is not None and status != expected_status:
        raise _Unparseable("status_mismatch")
    updated_at = _timestamp(data, "updated_at")
    if updated_at is None:
        raise _Unparseable("invalid_updated_at")
    error = _object(data, "error", "invalid_error")
    return Generation(
        task_id=task_id,
        status=status,
        model=_str(data, "model", "invalid_model"),
        reserved_credits=_credits(data, "reserved_credits"),
        final_credits=_credits(data, "final_credits"),
        result_urls=_result_urls(_object(data, "result", "invalid_result")),
        error_code=_str(error, "code", "invalid_error") if error else None,
        error_message=_str(error, "message", "invalid_error") if error else None,
        updated_at=updated_at,
    )


def _result_urls(result: dict[str, Any] | None) -> tuple[str, ...]:
    if result is None:
        return ()
    urls = result.get("urls")
    if urls is None:
        primary = _str(result, "primary_url", "invalid_result")
        return (primary,) if primary else ()
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise _Unparseable("invalid_result")
    return tuple(urls)


def _is_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def _str(obj: dict[str, Any], key: str, reason: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Unparseable(reason)
    return value


def _object(obj: dict[str, Any], key: str, reason: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise _Unparseable(reason)
    return value


def _credits(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int in Python; a credit count is not.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise _Unparseable("invalid_credits")
    return value


def _timestamp(obj: dict[str, Any], key: str) -> datetime | None:
    reason = f"invalid_{key}"
    text = _str(obj, key, reason)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Unparseable(reason) from None
    if moment.tzinfo is None:
        raise _Unparseable(reason)
    return moment.astimezone(UTC)
