"""The service's own events: what each operational condition is called, what it carries,
and how it is written as an event like Rivya's (`"source": "receiver"`).

An event's ID is derived from its type, the condition it is about and when that condition
started, so two replicas that raise (or end) the same condition write the same ID, and the
event is stored once (the events table's key) even where the raising itself races.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from receiver.model import OPERATIONAL_ID_PREFIX, OPERATIONAL_PREFIX

SOURCE = "receiver"


class OperationalType(StrEnum):
    DELIVERY_DEAD = "receiver.delivery.dead"
    DESTINATION_PAUSED = "receiver.destination.paused"
    DESTINATION_RESUMED = "receiver.destination.resumed"
    DESTINATION_DISABLED = "receiver.destination.disabled"
    DESTINATION_ENABLED = "receiver.destination.enabled"
    BACKLOG_STUCK = "receiver.backlog.stuck"
    BACKLOG_CLEARED = "receiver.backlog.cleared"
    CREDITS_LOW = "receiver.credits.low"
    CREDITS_RECOVERED = "receiver.credits.recovered"
    RECONCILE_REFUSED = "receiver.reconcile.refused"
    RECONCILE_RESTORED = "receiver.reconcile.restored"
    RECORDS_STUCK = "receiver.records.stuck"


@dataclass(frozen=True, slots=True)
class OperationalEvent:
    """One operational event. `condition` names what it is about (`backlog:billing`), the
    key two replicas share; `since` is when that condition started, `at` when this event was
    raised; `data` is JSON (names, numbers, IDs: never a secret, URL or body)."""

    type: OperationalType
    condition: str
    since: datetime
    at: datetime
    data: Mapping[str, Any]

    @property
    def event_id(self) -> str:
        key = f"{self.type.value}\x00{self.condition}\x00{self.since.isoformat()}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        kind = self.type.value.removeprefix(OPERATIONAL_PREFIX)
        return f"{OPERATIONAL_ID_PREFIX}{kind}:{digest}"

    def body(self) -> bytes:
        """The stored and forwarded body: Rivya's envelope keys, and where it came from."""
        return orjson.dumps(
            {
                "id": self.event_id,
                "type": self.type.value,
                "api_version": None,
                "created_at": self.at.isoformat(),
                "source": SOURCE,
                "data": {"since": self.since.isoformat(), **self.data},
            }
        )
