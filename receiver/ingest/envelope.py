"""Parse a verified Rivya event body into what the store needs.

Total by design: any bytes give an `Event`. A body we cannot understand comes back with
a `quarantine_reason` (a short code of ours, safe to log) so that it is still stored,
since Rivya disables endpoints that keep refusing its deliveries. Unknown fields are
ignored; Rivya may add them at any time. The generation in `data` is read by
`receiver.generations`, which reconciliation shares.
"""

import orjson

from receiver.generations import (
    NUL,
    Unparseable,
    is_key,
    parse_generation,
    read_text,
    read_timestamp,
)
from receiver.model import APPLIED_TYPES, Event


def parse_event(body: bytes, msg_id: str) -> Event:
    """`msg_id` (the `webhook-id` header, printable ASCII) is the event ID when the body
    has none we can use."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Event(event_id=msg_id, quarantine_reason="invalid_json")
    if not isinstance(envelope, dict):
        return Event(event_id=msg_id, quarantine_reason="not_an_object")
    event_id = envelope.get("id")
    if not is_key(event_id):
        return Event(event_id=msg_id, quarantine_reason="invalid_event_id")
    if NUL in event_id:
        return Event(event_id=msg_id, quarantine_reason="invalid_characters")
    event_type = envelope.get("type")
    if not is_key(event_type):
        return Event(event_id=event_id, quarantine_reason="invalid_type")
    if NUL in event_type:
        return Event(event_id=event_id, quarantine_reason="invalid_characters")
    try:
        return Event(
            event_id=event_id,
            type=event_type,
            api_version=read_text(envelope, "api_version", "invalid_api_version"),
            created_at=read_timestamp(envelope, "created_at"),
            generation=(
                parse_generation(envelope.get("data"), APPLIED_TYPES[event_type])
                if event_type in APPLIED_TYPES
                else None
            ),
        )
    except Unparseable as exc:
        return Event(event_id=event_id, type=event_type, quarantine_reason=exc.reason)
