"""Scheduled retention in real `receiver serve` and `receiver worker` processes, on both
backends: old finished events go by themselves; young ones, and those with a pending
delivery, stay; orphaned deliveries stay until the retention dead-letters them; replicas
prune one database together."""

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from receiver.exceptions import SettingsError
from receiver.settings import Settings
from receiver.store.tables import deliveries, events
from tests.conftest import Rivya
from tests.databases import reading
from tests.helpers import (
    Downstream,
    Operator,
    Received,
    ReceiverProcess,
    make_event,
    new_secret,
    only,
    wait_until,
    write_destinations,
)
from tests.test_metrics import scrape

StartServer = Callable[..., ReceiverProcess]
StartDownstream = Callable[..., Downstream]
# A day's retention, run every half second: events are made old by moving them back two days.
RETENTION = {"retention_days": "1", "retention_interval_seconds": "0.5"}
# One retry, an hour away: a delivery refused once stays pending for the whole test.
STAYS_PENDING = {"forward_retry_schedule": "3600"}


def backdate(server: ReceiverProcess, table: sa.Table, column: str, event_ids: list[str]) -> None:
    """Move `column` of the rows of `event_ids` two days back, through the table's own type."""
    key = table.c.id if table is events else table.c.event_id
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        for row_id, moment in db.execute(
            sa.select(table.c.id, table.c[column]).where(key.in_(event_ids))
        ):
            db.execute(
                sa.update(table)
                .where(table.c.id == row_id)
                .values({column: moment - timedelta(days=2)})
            )
        db.commit()


def stored(server: ReceiverProcess) -> set[str]:
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        return set(db.scalars(sa.select(events.c.id)))


def audits(server: ReceiverProcess, what: str) -> list[int]:
    """The count of each of retention's audit lines of `what`."""
    lines = [json.loads(line) for line in server.output().splitlines() if '"audit"' in line]
    return [
        line["count"]
        for line in lines
        if (line["event"], line["who"], line["what"]) == ("audit", "retention", what)
    ]


def refusing(event_ids: set[str]) -> Callable[[Received, int], tuple[int, dict[str, Any]]]:
    return lambda request, _: (503 if request.headers.get("webhook-id") in event_ids else 200, {})


def test_serve_prunes_old_finished_events_and_keeps_young_and_pending_ones(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    finished, pending, young = [make_event() for _ in range(2)], make_event(), make_event()
    downstream = own_downstream(refusing({pending["id"]}))
    server = start_server(forward_url=downstream.url, **RETENTION, **STAYS_PENDING)
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    for event in (*finished, pending, young):
        assert sender.send(event).status_code == 200
    wait_until(lambda: len(downstream.received) == 4, timeout=10)
    wait_until(
        lambda: len(sender.admin("/deliveries?state=delivered").json()["deliveries"]) == 3,
        timeout=5,
    )
    old = [event["id"] for event in (*finished, pending)]
    backdate(server, events, "received_at", old)

    wait_until(lambda: stored(server) == {pending["id"], young["id"]}, timeout=15)
    runs = len(audits(server, "prune"))
    wait_until(lambda: len(audits(server, "prune")) >= runs + 2, timeout=10)  # and again
    assert stored(server) == {pending["id"], young["id"]}
    (kept,) = sender.admin(f"/events/{pending['id']}").json()["deliveries"]
    assert (kept["state"], kept["attempts"]) == ("pending", 1)
    assert sum(audits(server, "prune")) == 2
    metrics = scrape(server.url)
    assert metrics[("receiver_retention_pruned_events_total", ())] == 2
    assert (
        metrics[("receiver_retention_last_success_timestamp_seconds", ())]
        > (datetime.now(UTC) - timedelta(minutes=1)).timestamp()
    )
    assert "retention_failed" not in server.output()


def test_orphaned_deliveries_keep_their_events_until_retention_dead_letters_them(
    start_server: StartServer,
    own_downstream: StartDownstream,
    rivya: Rivya,
    tmp_path: Path,
    new_secrets: Callable[[], str],
) -> None:
    """`prune` keeps an event whose delivery is orphaned (its destination removed); the
    worker's retention dead-letters orphaned deliveries older than the retention, with the
    reason `orphaned`, and their events then go."""
    old, young = make_event(), make_event()
    downstream = own_downstream(refusing({old["id"], young["id"]}))
    server = start_server(forward_url=downstream.url, retention_days="0", **STAYS_PENDING)
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    for event in (old, young):
        assert sender.send(event).status_code == 200
    wait_until(lambda: len(downstream.received) == 2, timeout=10)
    server.stop()

    # The destination removed: its deliveries are orphaned.
    file = write_destinations(
        tmp_path / "destinations.toml",
        {"name": "other", "url": downstream.url, "signing_secrets": new_secrets()},
    )
    worker = start_server("worker", **only(file), **RETENTION, **STAYS_PENDING)
    operator = Operator(worker)
    backdate(worker, events, "received_at", [old["id"]])
    assert operator.run("prune", "--older-than", "1d").startswith("Removed 0 events")
    listed = operator.json("deliveries", "list")["deliveries"]
    assert sorted(d["state"] for d in listed) == ["orphaned", "orphaned"]

    backdate(worker, deliveries, "created_at", [old["id"], young["id"]])
    wait_until(lambda: stored(worker) == {young["id"]}, timeout=15)
    (left,) = operator.json("deliveries", "list")["deliveries"]
    assert (left["event_id"], left["state"], left["last_error"]) == (
        young["id"],
        "dead",
        "orphaned",
    )
    assert audits(worker, "dead_letter_orphaned") == [2]


def test_two_replicas_prune_one_database_together(start_server: StartServer, rivya: Rivya) -> None:
    """Each old event goes once, and no run fails, with two processes pruning at once."""
    first = start_server(retention_days="0")
    first.stop()
    count = 1234
    moment = datetime.now(UTC) - timedelta(days=2)
    ids = [f"evt_{secrets.token_hex(8)}" for _ in range(count)]
    with reading(first.env["RECEIVER_DATABASE_URL"]) as db:
        db.execute(
            sa.insert(events),
            [
                {
                    "id": i,
                    "webhook_id": i,
                    "received_at": moment,
                    "outcome": "applied",
                    "body": b"{}",
                }
                for i in ids
            ],
        )
        db.execute(
            sa.insert(deliveries),
            [
                {
                    "event_id": i,
                    "destination": "default",
                    "state": "delivered",
                    "next_attempt_at": moment,
                    "created_at": moment,
                }
                for i in ids
            ],
        )
        db.commit()
    replicas = [start_server(**RETENTION) for _ in range(2)]
    wait_until(lambda: stored(first) == set(), timeout=60)
    assert sum(sum(audits(replica, "prune")) for replica in replicas) == count
    for replica in replicas:
        assert "retention_failed" not in replica.output()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECEIVER_RETENTION_DAYS", "-1"),
        ("RECEIVER_RETENTION_DAYS", "nan"),
        ("RECEIVER_RETENTION_DAYS", "1e308"),  # no date is that far back
        ("RECEIVER_RETENTION_INTERVAL_SECONDS", "0"),
        ("RECEIVER_RETENTION_INTERVAL_SECONDS", "inf"),
        ("RECEIVER_RETENTION_INTERVAL_SECONDS", "86401"),
    ],
)
def test_unusable_retention_settings_stop_the_start_naming_the_variable(
    variable: str, value: str
) -> None:
    environ = {"RECEIVER_SIGNING_SECRETS": new_secret(), variable: value}
    with pytest.raises(SettingsError, match=variable):
        Settings.from_environment(environ, None)
