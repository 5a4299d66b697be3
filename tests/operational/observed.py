"""What the operational tests look at, wherever it lands: the service's own events as a
subscribed destination receives them (each signature checked), as the admin API stores
them, and the messages a notification endpoint was sent."""

from typing import Any

import orjson
from standardwebhooks import Webhook

from tests.conftest import Rivya
from tests.helpers import Downstream
from tests.notify_endpoint import NotifyEndpoint, Sent

# The destination that names the service's own events, and only those.
SUBSCRIBER = "ops"


def subscriber(url: str, secret: str) -> dict[str, Any]:
    """Its `[[destinations]]` table."""
    return {
        "name": SUBSCRIBER,
        "url": url,
        "signing_secrets": secret,
        "event_types": ["receiver.*"],
    }


def received(sink: Downstream, secret: str, event_type: str) -> list[dict[str, Any]]:
    """Every request of `event_type` the sink took, in order, each checked as signed with
    `secret` (standardwebhooks raises on a bad signature)."""
    bodies = []
    for request in list(sink.received):
        body = orjson.loads(request.body)
        if body.get("type") == event_type:
            Webhook(secret).verify(request.body, request.headers)
            bodies.append(body)
    return bodies


def stored(sender: Rivya, event_type: str) -> list[dict[str, Any]]:
    """The stored events of `event_type`, each as the admin API shows one (its payload)."""
    listed = sender.admin("/events", params={"type": event_type, "limit": "1000"})
    assert listed.status_code == 200, listed.text
    return [sender.admin(f"/events/{event['id']}").json() for event in listed.json()["events"]]


def messages(endpoint: NotifyEndpoint, title: str) -> list[Sent]:
    return [sent for sent in list(endpoint.received) if sent.title == title]
