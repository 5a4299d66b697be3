"""What a Rivya event says, once parsed: the types ingest produces and the store keeps.

Both `receiver.ingest` and `receiver.store` import these from here, so the folders' imports
run one way, ingest to store, and neither reaches into the other for its types.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

GENERATION_STATUSES = frozenset({"queued", "processing", "succeeded", "failed"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed"})
# The event types that update a record, each with the status its generation must carry.
APPLIED_TYPES = {"generation.succeeded": "succeeded", "generation.failed": "failed"}


@dataclass(frozen=True, slots=True)
class Generation:
    task_id: str
    status: str
    model: str | None
    reserved_credits: int | None
    final_credits: int | None
    result_urls: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str | None = None
    api_version: str | None = None
    created_at: datetime | None = None
    generation: Generation | None = None
    quarantine_reason: str | None = None


class Outcome(StrEnum):
    """What storing an event did, as kept in `events.outcome` (and as destinations filter)."""

    APPLIED = "applied"  # the record now reflects it
    STALE = "stale"  # the record was already newer or terminal
    IGNORED = "ignored"  # a type we do not apply to records
    QUARANTINED = "quarantined"  # authentic, but a shape we do not understand


# The service's own events (receiver.operational): their types start so, a destination's
# `event_types` names them all with the wildcard, and their IDs start with
# OPERATIONAL_ID_PREFIX.
OPERATIONAL_PREFIX = "receiver."
OPERATIONAL_TYPES = "receiver.*"
OPERATIONAL_ID_PREFIX = "receiver:"


def is_operational(event_type: str | None) -> bool:
    return event_type is not None and event_type.startswith(OPERATIONAL_PREFIX)


def is_operational_id(event_id: str) -> bool:
    return event_id.startswith(OPERATIONAL_ID_PREFIX)
