"""Forwarding end to end: real `receiver serve` and `receiver worker` processes, a real
downstream HTTP server on loopback, verification with the standardwebhooks package."""

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from receiver.settings import Settings
from receiver.store.tables import deliveries, disabled_destinations
from tests.conftest import Rivya
from tests.databases import reading
from tests.helpers import (
    Downstream,
    ReceiverProcess,
    always,
    free_port,
    make_event,
    new_secret,
    sign,
    wait_until,
    write_destinations,
)

StartServer = Callable[..., ReceiverProcess]
StartDownstream = Callable[..., Downstream]


def forwarding_to(downstream: Downstream, **overrides: str) -> dict[str, str]:
    return {"forward_url": downstream.url, **overrides}


def delivery_of(rivya: Rivya, event_id: str, to: str | None = None) -> dict[str, Any]:
    """The event's one delivery (to the destination `to`, if given)."""
    (delivery,) = [
        delivery
        for delivery in rivya.admin(f"/events/{event_id}").json()["deliveries"]
        if to is None or delivery["destination"] == to
    ]
    return dict(delivery)


def test_downstream_gets_the_original_bytes_signed_with_our_secret(
    rivya: Rivya, downstream: Downstream, forward_secret: str
) -> None:
    event = make_event()
    body = b'{"kept": "as sent" ,  ' + orjson.dumps(event)[1:]
    assert rivya.post(body, sign(rivya.secret, body, event["id"])).status_code == 200
    wait_until(lambda: bool(downstream.of(event["id"])), timeout=5)

    (received,) = downstream.of(event["id"])
    assert received.body == body
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"] == event["id"]
    assert Webhook(forward_secret).verify(received.body, received.headers)["id"] == event["id"]
    assert received.headers["webhook-signature"] not in rivya.server.output()
    wait_until(lambda: delivery_of(rivya, event["id"])["state"] == "delivered", timeout=5)


def test_during_a_rotation_each_event_verifies_with_the_old_or_the_new_secret(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    new, old = new_secret(), new_secret()
    rivya.sensitive.add(new, old, new.removeprefix("whsec_"), old.removeprefix("whsec_"))
    downstream = own_downstream()
    sender = Rivya(
        start_server(**forwarding_to(downstream, forward_signing_secrets=f"{new},{old}")),
        rivya.secret,
        rivya.sensitive,
    )
    event = make_event()
    sender.send(event)
    wait_until(lambda: bool(downstream.of(event["id"])), timeout=5)
    (received,) = downstream.of(event["id"])
    rivya.sensitive.add(received.headers["webhook-signature"])
    for secret in (new, old):
        assert Webhook(secret).verify(received.body, received.headers)["id"] == event["id"]


def test_outage_then_recovery_delivers_and_records_every_attempt(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    downstream = own_downstream(lambda _, earlier: (503, {}) if earlier < 3 else (200, {}))
    sender = Rivya(
        start_server(**forwarding_to(downstream, forward_retry_schedule="0.2,0.2,0.2,0.2")),
        rivya.secret,
        rivya.sensitive,
    )
    event = make_event()
    sender.send(event)
    wait_until(lambda: delivery_of(sender, event["id"])["state"] == "delivered", timeout=10)

    delivery = delivery_of(sender, event["id"])
    assert delivery["attempts"] == 4
    assert delivery["last_status_code"] == 200
    log = delivery["attempt_log"]
    assert [a["status_code"] for a in log] == [503, 503, 503, 200]
    assert all(a["duration_ms"] >= 0 and a["attempted_at"] for a in log)
    assert len(downstream.of(event["id"])) == 4


def test_retry_after_is_respected_when_longer_than_the_schedule(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    downstream = own_downstream(
        lambda _, earlier: (429, {"retry-after": "2"}) if earlier == 0 else (200, {})
    )
    sender = Rivya(start_server(**forwarding_to(downstream)), rivya.secret, rivya.sensitive)
    event = make_event()
    sender.send(event)
    wait_until(lambda: len(downstream.of(event["id"])) == 2, timeout=10)
    first, second = downstream.of(event["id"])
    assert second.at - first.at >= 1.95


# Claims that would have sent a delivery had their chance: a few of the forwarder's polls
# (RECEIVER_FORWARD_POLL_SECONDS, left at its default).
CLAIMS_SECONDS = 3 * Settings.model_fields["forward_poll_seconds"].default


def test_410_gone_stops_at_once(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya, tmp_path: Path
) -> None:
    """A 410 is dead at its one attempt and disables its destination (in the database, and
    logged once): a later event's delivery there stays pending and unsent, while the same
    event reaches a healthy neighbour."""
    downstream, neighbour = own_downstream(always(410)), own_downstream()
    secret = new_secret()
    rivya.sensitive.add(secret)
    table = {"name": "neighbour", "url": neighbour.url, "signing_secrets": secret}
    server = start_server(
        **forwarding_to(
            downstream, destinations_file=write_destinations(tmp_path / "d.toml", table)
        )
    )
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    event = make_event()
    sender.send(event)
    wait_until(lambda: delivery_of(sender, event["id"], "default")["state"] == "dead", timeout=5)
    assert delivery_of(sender, event["id"], "default")["attempts"] == 1
    assert len(downstream.of(event["id"])) == 1
    wait_until(lambda: '"destination_disabled"' in server.output(), timeout=5)
    (logged,) = [
        line
        for line in map(orjson.loads, server.output().splitlines())
        if line["event"] == "destination_disabled"
    ]
    assert (logged["destination"], logged["reason"]) == ("default", "410 Gone")
    database_url = server.env["RECEIVER_DATABASE_URL"]
    with reading(database_url) as db:
        state = db.execute(sa.select(disabled_destinations)).all()
    assert [(row.destination, row.disabled_by, row.reason) for row in state] == [
        ("default", "410", "410 Gone")
    ]

    later = make_event()
    sender.send(later)
    wait_until(lambda: neighbour.of(later["id"]) != [], timeout=5)
    time.sleep(CLAIMS_SECONDS)
    assert downstream.of(later["id"]) == []
    with reading(database_url) as db:
        kept = db.execute(
            sa.select(deliveries.c.state, deliveries.c.attempts).where(
                deliveries.c.event_id == later["id"], deliveries.c.destination == "default"
            )
        ).one()
    assert tuple(kept) == ("pending", 0)


def test_exhausted_retries_leave_a_dead_letter_that_replay_delivers(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    answers = {"status": 500}
    downstream = own_downstream(lambda _, __: (answers["status"], {}))
    sender = Rivya(start_server(**forwarding_to(downstream)), rivya.secret, rivya.sensitive)
    event = make_event()
    sender.send(event)
    wait_until(lambda: delivery_of(sender, event["id"])["state"] == "dead", timeout=10)
    assert len(downstream.of(event["id"])) == 3  # 1 + the schedule's two retries
    # The attempt that makes it dead needs an operator: a warning; the retried ones, info.
    logged = [orjson.loads(line) for line in sender.server.output().splitlines()]
    assert [
        (line["level"], line["delivery_state"])
        for line in logged
        if line["event"] == "delivery_attempt"
    ] == [("info", "pending"), ("info", "pending"), ("warning", "dead")]

    dead = sender.admin("/deliveries?state=dead").json()["deliveries"]
    assert [(d["event_id"], d["attempts"], d["last_status_code"]) for d in dead] == [
        (event["id"], 3, 500)
    ]

    answers["status"] = 200
    replay = sender.admin(f"/events/{event['id']}/replay", method="POST")
    assert (replay.status_code, replay.json()["deliveries"]) == (202, 1)
    wait_until(lambda: len(downstream.of(event["id"])) == 4, timeout=5)
    states = [d["state"] for d in sender.admin(f"/events/{event['id']}").json()["deliveries"]]
    wait_until(
        lambda: (
            [d["state"] for d in sender.admin(f"/events/{event['id']}").json()["deliveries"]]
            == ["recovered", "delivered"]
        ),
        timeout=5,
        what=f"states {states}",
    )
    assert downstream.of(event["id"])[-1].headers["webhook-id"] == event["id"]


def test_bulk_replay_by_filter(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    downstream = own_downstream()
    sender = Rivya(start_server(**forwarding_to(downstream)), rivya.secret, rivya.sensitive)
    failed = [make_event("generation.failed") for _ in range(4)]
    succeeded = [make_event() for _ in range(3)]
    for event in failed + succeeded:
        sender.send(event)
    wait_until(lambda: len(downstream.received) == 7, timeout=5)

    response = sender.admin("/replay", method="POST", json={"type": "generation.failed"})
    assert (response.status_code, response.json()["deliveries"]) == (202, 4)
    wait_until(lambda: len(downstream.received) == 11, timeout=5)
    assert sorted(downstream.ids()[7:]) == sorted(e["id"] for e in failed)

    nothing = sender.admin("/replay", method="POST", json={"delivery_state": "dead"})
    assert nothing.json() == {"dry_run": False, "deliveries": 0, "by_destination": {}}
    later = sender.admin("/replay", method="POST", json={"since": "2999-01-01T00:00:00Z"})
    assert later.json()["deliveries"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"type": 5}',
        b'{"colour": "blue"}',
        b'{"since": "yesterday"}',
        b'{"since": "2026-01-01T00:00:00"}',
        b'{"delivery_state": "lost"}',
    ],
)
def test_bad_replay_filter_is_400_and_replays_nothing(rivya: Rivya, body: bytes) -> None:
    response = rivya.admin("/replay", method="POST", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_replay_of_unknown_event_is_404(rivya: Rivya) -> None:
    assert rivya.admin("/events/evt_nowhere/replay", method="POST").status_code == 404


def test_replay_without_a_downstream_is_409(start_server: StartServer, rivya: Rivya) -> None:
    sender = Rivya(start_server(forward_url=""), rivya.secret, rivya.sensitive)
    event = make_event()
    sender.send(event)
    assert sender.admin(f"/events/{event['id']}").json()["deliveries"] == []
    response = sender.admin(f"/events/{event['id']}/replay", method="POST")
    assert (response.status_code, response.json()["error"]) == (409, "forwarding_disabled")


def test_kill_9_with_deliveries_in_flight_loses_none(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    downstream = own_downstream(delay=0.5)
    process = start_server(
        **forwarding_to(downstream, forward_concurrency="4", forward_lease_seconds="3")
    )
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    events = [make_event() for _ in range(20)]
    for event in events:
        assert sender.send(event).status_code == 200
    wait_until(lambda: len(downstream.received) >= 2, timeout=5)
    process.stop(signal.SIGKILL)
    assert len(set(downstream.ids())) < len(events), "all were sent before the kill"

    process.start()
    wait_until(
        lambda: {e["id"] for e in events} <= set(downstream.ids()),
        timeout=30,
        what=lambda: f"{len(set(downstream.ids()))} of {len(events)} delivered",
    )
    wait_until(
        lambda: all(delivery_of(sender, e["id"])["state"] == "delivered" for e in events),
        timeout=10,
    )


def test_sigterm_finishes_or_releases_in_flight_deliveries(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    downstream = own_downstream(delay=0.3)
    # A lease far longer than the test: only a release on shutdown lets them go out quickly.
    process = start_server(
        **forwarding_to(downstream, forward_concurrency="2", forward_lease_seconds="300")
    )
    sender = Rivya(process, rivya.secret, rivya.sensitive)
    events = [make_event() for _ in range(10)]
    for event in events:
        sender.send(event)
    wait_until(lambda: len(downstream.received) >= 1, timeout=5)
    # uvicorn re-raises the signal once it has shut down, as the exit status shows.
    assert process.stop(signal.SIGTERM) == -signal.SIGTERM
    assert "Application shutdown complete." in process.output()
    assert '"forwarder_stopped"' in process.output()
    process.start()
    wait_until(
        lambda: all(delivery_of(sender, e["id"])["state"] == "delivered" for e in events),
        timeout=15,
    )


def test_two_workers_on_one_database_do_not_double_send(
    start_server: StartServer,
    own_downstream: StartDownstream,
    rivya: Rivya,
    tmp_path: Path,
) -> None:
    # Slow enough that one worker, 8 attempts at a time, takes several of the other's polls
    # (0.5 s apart) to drain the backlog: at 0.01 s, on a fast machine, one worker sent all
    # 120 between two polls of the other.
    downstream = own_downstream(delay=0.1)
    server = start_server(**forwarding_to(downstream, forward_concurrency="8"))
    server.stop()
    server.args = ("serve", "--no-forwarder")
    server.start()
    workers = [ReceiverProcess(tmp_path, server.env, ("worker",)).start() for _ in range(2)]
    try:
        sender = Rivya(server, rivya.secret, rivya.sensitive)
        events = [make_event() for _ in range(120)]
        for event in events:
            sender.send(event)
        wait_until(lambda: len(downstream.received) >= len(events), timeout=30)
        wait_until(
            lambda: sender.admin("/deliveries?state=pending").json()["deliveries"] == [],
            timeout=10,
        )
        # Rows another process adds are found by polling, within about a second.
        late = make_event()
        sender.send(late)
        wait_until(lambda: bool(downstream.of(late["id"])), timeout=3)
        events.append(late)
    finally:
        for worker in workers:
            assert worker.stop() == 0
    ids = downstream.ids()
    assert sorted(ids) == sorted(e["id"] for e in events), "an event was sent twice or never"
    for worker in workers:
        assert '"delivery_attempt"' in worker.output(), "one worker did all the work"
        assert rivya.sensitive.found_in(worker.output()) == []


@pytest.mark.parametrize(
    ("failure", "error_class"), [("refused", "ClientConnectorError"), ("slow", "TimeoutError")]
)
def test_connection_errors_and_timeouts_are_recorded_by_class(
    start_server: StartServer,
    own_downstream: StartDownstream,
    rivya: Rivya,
    failure: str,
    error_class: str,
) -> None:
    url = own_downstream(delay=1.5).url if failure == "slow" else f"http://127.0.0.1:{free_port()}/"
    sender = Rivya(
        start_server(forward_url=url, forward_timeout_seconds="1", forward_lease_seconds="3"),
        rivya.secret,
        rivya.sensitive,
    )
    event = make_event()
    sender.send(event)
    wait_until(lambda: delivery_of(sender, event["id"])["attempts"] >= 1, timeout=10)
    delivery = delivery_of(sender, event["id"])
    assert delivery["state"] == "pending"
    assert (delivery["last_status_code"], delivery["last_error"]) == (None, error_class)


def test_credentials_in_the_forward_url_never_reach_logs_or_the_admin_api(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    downstream = own_downstream()
    url = downstream.url.replace("http://", "http://hook-user:hook-password-123@")
    rivya.sensitive.add("hook-password-123", url)
    sender = Rivya(start_server(forward_url=url), rivya.secret, rivya.sensitive)
    event = make_event()
    sender.send(event)
    wait_until(lambda: bool(downstream.of(event["id"])), timeout=5)
    assert downstream.of(event["id"])[0].headers["authorization"].startswith("Basic ")
    assert "hook-password-123" not in sender.admin(f"/events/{event['id']}").text
    assert "hook-password-123" not in sender.admin("/deliveries").text
