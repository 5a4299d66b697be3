"""Several destinations, through real `receiver` processes and real sinks on loopback, on
each backend: each gets what it subscribed to, signed with its own secret; one removed from
the file waits, orphaned, and resumes when it is back."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from receiver.store import tables
from tests.conftest import ADMIN_TOKEN, Rivya, Sensitive
from tests.databases import reading
from tests.helpers import (
    HTTP,
    Downstream,
    Operator,
    ReceiverProcess,
    make_event,
    only,
    run_cli,
    wait_until,
    write_destinations,
)


def test_each_destination_gets_what_it_subscribed_to_signed_with_its_own_secret(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    names = ("everything", "failures", "applied", "stale")
    sinks = {name: own_downstream() for name in names}
    keys = {name: new_secrets() for name in sinks}
    filters: dict[str, dict[str, Any]] = {
        "everything": {},
        "failures": {"event_types": ["generation.failed"]},
        "applied": {"outcomes": ["applied"]},
        "stale": {"outcomes": ["stale"]},
    }
    tables = [
        {"name": name, "url": sinks[name].url, "signing_secrets": keys[name], **filters[name]}
        for name in sinks
    ]
    process = start_server(**only(write_destinations(tmp_path / "destinations.toml", *tables)))
    rivya = Rivya(process, secrets_in_use[0], sensitive)
    now = datetime.now(UTC)
    failed = make_event("generation.failed", updated_at=now)
    # Older than the failure, for the same (now terminal) task: stored as stale.
    stale = make_event(task_id=failed["data"]["id"], updated_at=now - timedelta(minutes=1))
    succeeded = make_event()
    for event in (failed, stale, succeeded):
        assert rivya.send(event).json()["status"] == "accepted"
    quarantined = b'{"id": "evt_q", "type": "generation.succeeded"}'
    assert rivya.post(quarantined, _signed(secrets_in_use[0], quarantined)).status_code == 200

    expected = {
        # Every outcome but stale, unless `outcomes` names it.
        "everything": {failed["id"], succeeded["id"], "evt_q"},
        "failures": {failed["id"]},
        "applied": {failed["id"], succeeded["id"]},
        "stale": {stale["id"]},
    }
    for name, sink in sinks.items():
        wait_until(lambda: set(sink.ids()) == expected[name], timeout=15, what=name)  # noqa: B023
    wait_until(
        lambda: rivya.admin("/deliveries?state=pending").json()["deliveries"] == [], timeout=10
    )
    for name, sink in sinks.items():
        assert sorted(sink.ids()) == sorted(expected[name]), "each sent once"
        for received in sink.received:
            Webhook(keys[name]).verify(received.body, received.headers)
            other = keys["failures" if name != "failures" else "applied"]
            with pytest.raises(WebhookVerificationError):
                Webhook(other).verify(received.body, received.headers)
    listed = rivya.admin("/destinations").json()["destinations"]
    assert [(d["destination"], d["delivered"], d["pending"]) for d in listed] == [
        ("everything", 3, 0),
        ("failures", 1, 0),
        ("applied", 2, 0),
        ("stale", 1, 0),
    ]
    # The outcomes each is sent: without a filter, every one but stale (it was null).
    assert [d["outcomes"] for d in listed] == [
        ["applied", "ignored", "quarantined"],
        ["applied", "ignored", "quarantined"],
        ["applied"],
        ["stale"],
    ]
    assert all(d["last_success_at"] and d["consecutive_failures"] == 0 for d in listed)


def _signed(secret: str, body: bytes) -> dict[str, str]:
    moment = datetime.now(UTC)
    return {
        "webhook-id": "msg_q",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_q", moment, body.decode()),
        "content-type": "application/json",
    }


def test_a_destination_removed_and_added_back_loses_nothing_and_repeats_nothing(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
) -> None:
    keep, later = own_downstream(), own_downstream()
    both = [
        {"name": "keep", "url": keep.url, "signing_secrets": new_secrets()},
        {"name": "later", "url": later.url, "signing_secrets": new_secrets()},
    ]
    with_both = write_destinations(tmp_path / "both.toml", *both)
    only_keep = write_destinations(tmp_path / "keep.toml", both[0])

    server = start_server("serve", "--no-forwarder", **only(with_both))
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    first = [make_event() for _ in range(5)]
    assert all(rivya.send(event).status_code == 200 for event in first)
    server.stop()

    server = start_server(**only(only_keep))
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    second = [make_event() for _ in range(3)]
    assert all(rivya.send(event).status_code == 200 for event in second)
    everything = {event["id"] for event in first + second}
    wait_until(lambda: set(keep.ids()) == everything, timeout=15)
    wait_until(
        lambda: rivya.admin("/deliveries?state=pending").json()["deliveries"] == [], timeout=10
    )
    orphaned = rivya.admin("/deliveries?state=orphaned&destination=later").json()["deliveries"]
    assert sorted(d["event_id"] for d in orphaned) == sorted(e["id"] for e in first)
    assert {d["state"] for d in orphaned} == {"orphaned"}
    listed = {d["destination"]: d for d in rivya.admin("/destinations").json()["destinations"]}
    assert (listed["later"]["configured"], listed["later"]["orphaned"]) == (False, 5)
    assert (listed["later"]["pending"], listed["later"]["oldest_pending"]) == (0, None)
    metrics = _metric_lines(server)
    assert 'receiver_deliveries{destination="later",state="orphaned"} 5.0' in metrics
    assert 'receiver_pending_deliveries{destination="later"}' not in "\n".join(metrics)
    assert later.received == []
    # An event's own story says the same as the listings: orphaned, no next attempt.
    shown = run_cli("events", "show", first[0]["id"], env=server.env, cwd=server.workdir)
    assert shown.returncode == 0, shown.stderr
    (to_later,) = [line for line in shown.stdout.splitlines() if " to later: " in line]
    assert to_later.endswith(": orphaned, 0 attempts"), to_later
    as_json = run_cli(
        "events", "show", first[0]["id"], "--json", env=server.env, cwd=server.workdir
    )
    states = {d["destination"]: d["state"] for d in orjson.loads(as_json.stdout)["deliveries"]}
    assert states == {"keep": "delivered", "later": "orphaned"}
    server.stop()

    server = start_server(**only(with_both))
    wait_until(lambda: len(later.received) == len(first), timeout=15)
    rivya = Rivya(server, secrets_in_use[0], sensitive)
    wait_until(
        lambda: rivya.admin("/deliveries?state=pending").json()["deliveries"] == [], timeout=10
    )
    # Only what was stored while it was configured; nothing again to the other.
    assert sorted(later.ids()) == sorted(event["id"] for event in first)
    assert sorted(keep.ids()) == sorted(everything)


def _metric_lines(server: ReceiverProcess) -> list[str]:
    return HTTP.get(
        f"{server.url}/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ).text.splitlines()


def test_an_event_reprocessing_applies_is_sent_once_where_applied_is_wanted(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    tmp_path: Path,
) -> None:
    """Quarantined by an older release (stored, sent nowhere that wants only `applied`),
    then `receiver reprocess`: the destination subscribed to `applied` receives it, once,
    however many times it is reprocessed."""
    sink = own_downstream()
    table = {"name": "applied", "url": sink.url, "signing_secrets": new_secrets()}
    file = write_destinations(tmp_path / "d.toml", table | {"outcomes": ["applied"]})
    server = start_server(**only(file))
    event = make_event()
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        db.execute(
            sa.insert(tables.events).values(
                id=event["id"],
                webhook_id=event["id"],
                received_at=datetime.now(UTC),
                outcome="quarantined",
                quarantine_reason="old_release",
                body=orjson.dumps(event),
            )
        )
        db.commit()
    operator = Operator(server)
    assert operator.json("reprocess", "--quarantined", "--yes")["outcomes"] == {"applied": 1}
    wait_until(lambda: sink.ids() == [event["id"]], timeout=15)
    assert operator.json("reprocess", event["id"])["outcomes"] == {"applied": 1}
    stored = HTTP.get(
        f"{server.url}/admin/events/{event['id']}",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()
    assert [d["destination"] for d in stored["deliveries"]] == ["applied"]
    assert sink.ids() == [event["id"]]
