"""Operators' commands against a real database filled through the real HTTP path, with the
server (and its forwarder) running beside them."""

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from receiver.store import tables
from tests.conftest import Rivya
from tests.databases import reading
from tests.helpers import (
    Downstream,
    Operator,
    ReceiverProcess,
    always,
    make_event,
    new_secret,
    run_cli,
    sign,
    wait_until,
    write_destinations,
)

StartServer = Callable[..., ReceiverProcess]


@pytest.fixture
def fresh(start_server: StartServer, rivya: Rivya) -> tuple[Rivya, Operator]:
    """A server on an empty database, forwarding to the module's downstream."""
    server = start_server()
    return Rivya(server, rivya.secret, rivya.sensitive), Operator(server)


def send_mix(sender: Rivya) -> dict[str, list[dict[str, Any]]]:
    mix = {
        "succeeded": [make_event() for _ in range(3)],
        "failed": [make_event("generation.failed") for _ in range(2)],
        "unknown": [make_event("generation.progressed")],
    }
    for events in mix.values():
        for event in events:
            assert sender.send(event).status_code == 200
    body = b'["not an object"]'
    assert sender.post(body, sign(sender.secret, body, "msg_quarantined")).status_code == 200
    return mix


def all_delivered(sender: Rivya) -> bool:
    pending: list[object] = sender.admin("/deliveries?state=pending").json()["deliveries"]
    return pending == []


def test_events_list_filters_and_shows(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    mix = send_mix(sender)
    failed = operator.json("events", "list", "--type", "generation.failed")
    assert sorted(e["id"] for e in failed["events"]) == sorted(e["id"] for e in mix["failed"])
    assert failed["next_cursor"] is None
    quarantined = operator.json("events", "list", "--outcome", "quarantined")
    assert [e["id"] for e in quarantined["events"]] == ["msg_quarantined"]
    assert operator.json("events", "list", "--since", "2999-01-01") == {
        "events": [],
        "next_cursor": None,
    }
    table = operator.run("events", "list", "--until", "1h")
    assert table.strip() == "No events."
    listing = operator.run("events", "list")
    assert listing.splitlines()[0].split() == [
        "RECEIVED_AT",
        "ID",
        "TYPE",
        "OUTCOME",
        "TASK_ID",
        "QUARANTINE_REASON",
    ]
    assert len(listing.splitlines()) == 1 + 7

    event = mix["succeeded"][0]
    wait_until(lambda: all_delivered(sender), timeout=10)
    shown = operator.json("events", "show", event["id"])
    assert (shown["outcome"], shown["payload"]) == ("applied", event)
    assert [a["status_code"] for a in shown["deliveries"][0]["attempt_log"]] == [200]
    human = operator.run("events", "show", event["id"])
    assert "Payload:" in human
    assert "delivered, 1 attempt\n" in human


def test_listings_page_with_a_cursor(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    sent = [make_event() for _ in range(5)]
    for event in sent:
        sender.send(event)
    seen: list[str] = []
    cursor: list[str] = []
    while True:
        page = operator.json("events", "list", "--limit", "2", *cursor)
        seen += [e["id"] for e in page["events"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", page["next_cursor"]]
    assert seen == [e["id"] for e in reversed(sent)]
    wait_until(lambda: all_delivered(sender), timeout=10)
    first = operator.json("deliveries", "list", "--limit", "3")
    rest = operator.json("deliveries", "list", "--cursor", first["next_cursor"])
    assert len(first["deliveries"]) + len(rest["deliveries"]) == 5
    assert rest["next_cursor"] is None
    assert "cursor: not one this service gave out" in operator.run(
        "events", "list", "--cursor", "bm9wZQ==", code=1
    )


def test_records_show(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    event = make_event("generation.failed")
    sender.send(event)
    record = operator.json("records", "show", event["data"]["id"])
    assert (record["status"], record["error_code"], record["final_credits"]) == (
        "failed",
        "generation_failed",
        0,
    )
    assert "generation_failed" in operator.run("records", "show", event["data"]["id"])
    assert operator.run("records", "show", "task_nowhere", code=1).strip() == (
        "Error: no record 'task_nowhere'"
    )


def test_stats_match_the_events_sent(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    send_mix(sender)
    wait_until(lambda: all_delivered(sender), timeout=10)
    numbers = operator.json("stats")
    assert numbers["events"] == [
        {"type": None, "outcome": "quarantined", "count": 1},
        {"type": "generation.failed", "outcome": "applied", "count": 2},
        {"type": "generation.progressed", "outcome": "ignored", "count": 1},
        {"type": "generation.succeeded", "outcome": "applied", "count": 3},
    ]
    assert numbers["deliveries"] == {"delivered": 7}
    assert numbers["records"] == {"failed": 2, "succeeded": 3}
    assert numbers["credits"] == [{"model": "z-image", "records": 5, "reserved": 20, "final": 12}]
    assert numbers["failure_codes"] == [{"code": "generation_failed", "count": 2}]
    assert numbers["oldest_pending_delivery"] is None
    assert sender.admin("/stats").json() == {**numbers, "since": None}

    later = operator.json("stats", "--since", "2999-01-01T00:00:00Z")
    assert (later["events"], later["deliveries"], later["credits"]) == ([], {}, [])
    assert "z-image" in operator.run("stats")


def test_replay_is_picked_up_by_the_running_forwarder(
    fresh: tuple[Rivya, Operator], downstream: Downstream
) -> None:
    sender, operator = fresh
    event = make_event()
    sender.send(event)
    wait_until(lambda: len(downstream.of(event["id"])) == 1, timeout=5)
    assert operator.run("replay", event["id"]).strip() == "Queued 1 delivery: default 1."
    wait_until(lambda: len(downstream.of(event["id"])) == 2, timeout=5)
    assert operator.run("replay", "evt_missing", event["id"], code=1).strip() == (
        "Error: no event evt_missing"
    )


def test_replay_by_filter_dry_run_then_to_another_endpoint(
    fresh: tuple[Rivya, Operator], own_downstream: Callable[..., Downstream]
) -> None:
    sender, operator = fresh
    mix = send_mix(sender)
    wait_until(lambda: all_delivered(sender), timeout=10)
    before = operator.json("deliveries", "list")["deliveries"]

    assert operator.json("replay", "--type", "generation.failed", "--dry-run") == {
        "dry_run": True,
        "deliveries": 2,
        "by_destination": {"default": 2},
    }
    assert operator.run("replay", "--since", "1h", "--dry-run").strip() == (
        "Would queue 7 deliveries: default 7."
    )
    assert operator.json("deliveries", "list")["deliveries"] == before

    other = own_downstream()
    # Nothing to queue: nothing to ask.
    assert operator.run("replay", "--type", "generation.none").strip() == "Queued 0 deliveries."
    # A replay by filter asks first, with the numbers; no answer is no.
    asked = operator.run("replay", "--type", "generation.failed", "--to", other.url, code=1)
    assert "Replay 2 deliveries: default 2? [y/N]" in asked
    assert operator.json("deliveries", "list")["deliveries"] == before
    assert operator.json("replay", "--type", "generation.failed", "--to", other.url, "--yes") == {
        "dry_run": False,
        "deliveries": 2,
        "by_destination": {"default": 2},
    }
    wait_until(lambda: len(other.received) == 2, timeout=5)
    assert sorted(other.ids()) == sorted(e["id"] for e in mix["failed"])


def test_replay_refuses_what_it_cannot_do(
    start_server: StartServer, fresh: tuple[Rivya, Operator]
) -> None:
    _, operator = fresh
    assert "give event IDs, or filters" in operator.run("replay", code=2)
    assert "give event IDs, or filters" in operator.run("replay", "evt_1", "--type", "x", code=2)
    for bad in ("ftp://x", "http://[::1"):
        assert "--to: use an absolute" in operator.run("replay", "evt_1", "--to", bad, code=2)
    unforwarded = Operator(start_server(forward_url=""))
    assert unforwarded.run("replay", "--since", "1h", code=1).startswith("Error: forwarding is off")


def test_prune_dry_run_changes_nothing_and_records_are_kept(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    mix = send_mix(sender)
    wait_until(lambda: all_delivered(sender), timeout=10)
    with reading(operator.server.env["RECEIVER_DATABASE_URL"]) as db:
        # As if they had come two days ago; through the table's own type, on any backend.
        stored = tables.events
        for event_id, received_at in db.execute(sa.select(stored.c.id, stored.c.received_at)):
            db.execute(
                sa.update(stored)
                .where(stored.c.id == event_id)
                .values(received_at=received_at - timedelta(days=2))
            )
        db.commit()
    kept = make_event()
    sender.send(kept)  # too young to prune
    wait_until(lambda: all_delivered(sender), timeout=10)

    def table_counts() -> tuple[int, ...]:
        with reading(operator.server.env["RECEIVER_DATABASE_URL"]) as db:
            return tuple(
                db.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
                for table in ("events", "deliveries", "attempts", "records")
            )

    counts = table_counts()
    assert counts == (8, 8, 8, 6)
    dry = operator.json("prune", "--older-than", "1d", "--dry-run")
    assert (dry["dry_run"], dry["events"], dry["deliveries"], dry["attempts"]) == (True, 7, 7, 7)
    assert table_counts() == counts

    assert operator.run("prune", "--older-than", "1d").startswith(
        "Removed 7 events, 7 deliveries and 7 attempts"
    )
    assert table_counts() == (1, 1, 1, 6)
    task_id = mix["succeeded"][0]["data"]["id"]
    assert operator.json("records", "show", task_id)["status"] == "succeeded"
    assert operator.run("events", "show", mix["succeeded"][0]["id"], code=1).startswith("Error")
    assert operator.json("events", "show", kept["id"])["outcome"] == "applied"
    assert "bad" in operator.run("prune", "--older-than", "bad", code=1)


def test_prune_keeps_an_old_event_whose_delivery_is_pending(
    start_server: StartServer, own_downstream: Callable[..., Downstream], rivya: Rivya
) -> None:
    """Data loss if it broke: an event still to be forwarded (its destination answering 503,
    the next try an hour away) is kept however old it is."""
    downstream = own_downstream(always(503))
    server = start_server(forward_url=downstream.url, forward_retry_schedule="3600")
    sender, operator = Rivya(server, rivya.secret, rivya.sensitive), Operator(server)
    event = make_event()
    assert sender.send(event).status_code == 200
    wait_until(
        lambda: operator.json("events", "show", event["id"])["deliveries"][0]["attempts"] == 1,
        timeout=10,
    )
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        stored = tables.events
        (received_at,) = db.execute(sa.select(stored.c.received_at)).one()
        db.execute(sa.update(stored).values(received_at=received_at - timedelta(days=2)))
        db.commit()
    assert operator.json("prune", "--older-than", "1d", "--dry-run")["events"] == 0
    assert operator.run("prune", "--older-than", "1d").startswith("Removed 0 events")
    (delivery,) = operator.json("events", "show", event["id"])["deliveries"]
    assert (delivery["state"], delivery["attempts"]) == ("pending", 1)


def test_reprocess_reapplies_and_is_idempotent(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    event = make_event()
    sender.send(event)
    # As if an older release had quarantined it and never written its record.
    with reading(operator.server.env["RECEIVER_DATABASE_URL"]) as db:
        db.execute(sa.text("UPDATE events SET outcome = 'quarantined', quarantine_reason = 'old'"))
        db.execute(sa.text("DELETE FROM records"))
        db.commit()
    # Every quarantined event is a bulk run: it asks first, and "n" changes nothing.
    asked = operator.run("reprocess", "--quarantined", code=1, answer="n\n")
    assert "Reprocess 1 quarantined event? [y/N]" in asked
    assert operator.json("events", "show", event["id"])["outcome"] == "quarantined"
    # --yes with a quarantined event stored: it runs without asking (no answer is typed:
    # a question would abort it).
    assert operator.json("reprocess", "--quarantined", "--yes") == {
        "reprocessed": 1,
        "changed": 1,
        "unchanged": 0,
        "gone": 0,
        "outcomes": {"applied": 1},
    }
    assert operator.json("records", "show", event["data"]["id"])["last_event_id"] == event["id"]
    again = operator.run("reprocess", event["id"])
    assert again.strip() == "Reprocessed 1 event: 0 changed outcome, 1 unchanged."
    with reading(operator.server.env["RECEIVER_DATABASE_URL"]) as db:
        db.execute(sa.text("UPDATE events SET outcome = 'quarantined', quarantine_reason = 'old'"))
        db.commit()
    assert json.loads(operator.run("reprocess", "--quarantined", "--json", answer="y\n")) == {
        "reprocessed": 1,
        "changed": 1,
        "unchanged": 0,
        "gone": 0,
        "outcomes": {"applied": 1},
    }
    assert operator.json("reprocess", "--quarantined", "--yes") == {
        "reprocessed": 0,
        "changed": 0,
        "unchanged": 0,
        "gone": 0,
        "outcomes": {},
    }
    assert "give event IDs or --quarantined" in operator.run("reprocess", code=2)


def test_changes_are_audited_on_stderr(fresh: tuple[Rivya, Operator]) -> None:
    sender, operator = fresh
    event = make_event()
    sender.send(event)
    result = run_cli("replay", event["id"], env=operator.server.env, cwd=operator.server.workdir)
    (audit,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert (audit["event"], audit["who"], audit["what"], audit["count"]) == (
        "audit",
        "cli",
        "replay",
        1,
    )


@pytest.mark.sqlite_only
def test_database_problems_are_one_line_and_exit_1(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    missing = {**server_env, "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/no.db"}
    result = run_cli("events", "list", env=missing, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"Error: no database at {tmp_path}/no.db: run `receiver migrate` first",
    )
    assert not (tmp_path / "no.db").exists()

    sqlite3.connect(tmp_path / "empty.db").close()
    empty = {**server_env, "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/empty.db"}
    result = run_cli("stats", env=empty, cwd=tmp_path)
    assert (
        result.stderr.strip() == "Error: the database schema is not current: run `receiver migrate`"
    )

    (tmp_path / "dir.db").mkdir()
    (tmp_path / "dir.db" / "x").touch()
    broken = {
        **server_env,
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/dir.db/x/y.db",
    }
    result = run_cli("migrate", env=broken, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_destinations_listing_and_replay_to_one_destination(
    start_server: StartServer,
    rivya: Rivya,
    downstream: Downstream,
    own_downstream: Callable[..., Downstream],
    tmp_path: Path,
) -> None:
    billing = own_downstream()
    secret = new_secret()
    rivya.sensitive.add(secret)
    table = {
        "name": "billing",
        "url": billing.url.replace("http://", "http://user:pass@"),
        "signing_secrets": secret,
        "event_types": ["generation.failed"],
    }
    server = start_server(destinations_file=write_destinations(tmp_path / "d.toml", table))
    sender, operator = Rivya(server, rivya.secret, rivya.sensitive), Operator(server)
    mix = send_mix(sender)
    wait_until(lambda: all_delivered(sender), timeout=10)

    listed = operator.json("destinations", "list")["destinations"]
    assert [(d["destination"], d["delivered"], d["event_types"]) for d in listed] == [
        ("default", 7, None),
        ("billing", 2, ["generation.failed"]),
    ]
    # Without an outcomes filter, what each is sent by default: never stale (it was null).
    assert [d["outcomes"] for d in listed] == [["applied", "ignored", "quarantined"]] * 2
    assert '["applied","ignored","quarantined"]' in operator.run("destinations", "list")
    assert listed[1]["url"] == billing.url  # credentials stripped
    assert "user:pass" not in operator.run("destinations", "list")
    to_billing = operator.json("deliveries", "list", "--destination", "billing")["deliveries"]
    assert sorted(d["event_id"] for d in to_billing) == sorted(e["id"] for e in mix["failed"])
    numbers = operator.json("stats")["destinations"]
    assert [(d["destination"], d["delivered"]) for d in numbers] == [("default", 7), ("billing", 2)]

    succeeded = mix["succeeded"][0]["id"]
    # By default, to every destination that wants the event now: not billing.
    assert operator.json("replay", succeeded)["by_destination"] == {"default": 1}
    # Named, whatever its filters.
    assert operator.json("replay", succeeded, "--destination", "billing")["by_destination"] == {
        "billing": 1
    }
    wait_until(lambda: len(billing.of(succeeded)) == 1, timeout=5)
    wait_until(lambda: len(downstream.of(succeeded)) >= 1, timeout=5)
    replayed = sender.admin(
        "/replay", "POST", json={"type": "generation.failed", "destination": "billing"}
    )
    assert replayed.json() == {"dry_run": False, "deliveries": 2, "by_destination": {"billing": 2}}
    assert operator.run("replay", succeeded, "--destination", "nope", code=1).strip() == (
        "Error: destination: 'nope' is not configured"
    )
    assert operator.run("replay", succeeded, "--to", billing.url, code=1).strip() == (
        "Error: destination: name the one whose secrets sign a replay to another URL"
    )
    unknown = sender.admin(f"/events/{succeeded}/replay", "POST", json={"destination": "nope"})
    assert unknown.status_code == 400
