"""What the operational tests look at, wherever it lands: the service's own events as a
subscribed destination receives them (each signature checked), as the admin API stores
them, and the messages a notification endpoint was sent; and the `billing` destination, the
subscribed `ops` and the endpoint a test's servers are given, to watch them by."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from tests.conftest import SECRETS_OF_THE_RUN, Rivya, Sensitive
from tests.helpers import ANSWER_200, Downstream, Respond, only, write_destinations
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


@dataclass(frozen=True)
class Sinks:
    """`billing` (the test's sink), the subscribed `ops`, the notification endpoint, and
    `settings`: those of a server forwarding to both and telling the endpoint."""

    billing: Downstream
    ops: Downstream
    ops_secret: str
    endpoint: NotifyEndpoint
    settings: dict[str, str]

    def received(self, event_type: str) -> list[dict[str, Any]]:
        return received(self.ops, self.ops_secret, event_type)

    def messages(self, title: str) -> list[Sent]:
        return messages(self.endpoint, title)


@pytest.fixture
def endpoint(sensitive: Sensitive) -> Iterator[NotifyEndpoint]:
    made = NotifyEndpoint()
    for registry in (sensitive, SECRETS_OF_THE_RUN):
        registry.add(*made.secrets(), made.url())
    yield made
    made.stop()


@pytest.fixture
def sinks(
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    endpoint: NotifyEndpoint,
    tmp_path: Path,
) -> Callable[..., Sinks]:
    """`billing` answering with `respond` after `delay`, its `[[destinations]]` table given
    the keys in `table` too (`max_in_flight`)."""

    def make(respond: Respond = ANSWER_200, delay: float = 0.0, **table: Any) -> Sinks:
        billing, ops, ops_secret = own_downstream(respond, delay), own_downstream(), new_secrets()
        file = write_destinations(
            tmp_path / "destinations.toml",
            {"name": "billing", "url": billing.url, "signing_secrets": new_secrets(), **table},
            subscriber(ops.url, ops_secret),
        )
        settings = {**only(file), "notify_urls": endpoint.url()}
        return Sinks(billing, ops, ops_secret, endpoint, settings)

    return make
