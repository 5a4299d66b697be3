"""Recovering a destination's dead letters, on a real server with two real sinks: the healthy
`default` and `billing`, which fails until its retries run out and then comes back. Replay by
delivery state counts and sends deliveries only where they died, and once delivered the dead
letters leave every "needs action" figure and stay listed as recovered."""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Rivya
from tests.helpers import (
    ANSWER_200,
    Downstream,
    Operator,
    ReceiverProcess,
    always,
    make_event,
    new_secret,
    run_cli,
    wait_until,
    write_destinations,
)
from tests.test_metrics import QUICK, scrape

EVENTS = 3
DEAD = {"delivery_state": "dead"}


def to(sender: Rivya, state: str, destination: str) -> list[dict[str, Any]]:
    query = f"/deliveries?state={state}&destination={destination}"
    found: list[dict[str, Any]] = sender.admin(query).json()["deliveries"]
    return found


@pytest.fixture
def dead_in_billing(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    own_downstream: Callable[..., Downstream],
    tmp_path: Path,
) -> tuple[Rivya, Operator, Downstream, Downstream, list[str]]:
    """Three events delivered to `default` and dead in `billing` (two attempts each)."""
    healthy, billing = own_downstream(), own_downstream(always(503))
    secret = new_secret()
    rivya.sensitive.add(secret)
    table = {"name": "billing", "url": billing.url, "signing_secrets": secret}
    server = start_server(
        forward_url=healthy.url,
        destinations_file=write_destinations(tmp_path / "d.toml", table),
        forward_retry_schedule="0.05",
        metrics_refresh_seconds=QUICK,
    )
    sender, operator = Rivya(server, rivya.secret, rivya.sensitive), Operator(server)
    sent = [make_event() for _ in range(EVENTS)]
    for event in sent:
        assert sender.send(event).status_code == 200
    wait_until(lambda: len(to(sender, "dead", "billing")) == EVENTS, timeout=10)
    wait_until(lambda: len(healthy.received) == EVENTS, timeout=10)
    return sender, operator, healthy, billing, [event["id"] for event in sent]


def test_dry_runs_count_deliveries_where_they_died(
    dead_in_billing: tuple[Rivya, Operator, Downstream, Downstream, list[str]],
) -> None:
    """By delivery state and no destination: billing 3, default none, in the CLI (JSON and
    words), the admin API, and destinations list's hint, which names the one command."""
    sender, operator, _, _, _ = dead_in_billing
    counted = {"dry_run": True, "deliveries": EVENTS, "by_destination": {"billing": EVENTS}}
    assert operator.json("replay", "--delivery-state", "dead", "--dry-run") == counted
    assert operator.run("replay", "--delivery-state", "dead", "--dry-run").strip() == (
        "Would queue 3 deliveries: billing 3."
    )
    answer = sender.admin("/replay", "POST", json={**DEAD, "dry_run": True})
    assert (answer.status_code, answer.json()) == (200, counted)
    # Delivered everywhere: 3 to default, none to billing.
    delivered = sender.admin(
        "/replay", "POST", json={"delivery_state": "delivered", "dry_run": True}
    )
    assert delivered.json()["by_destination"] == {"default": EVENTS}
    listing = operator.run("destinations", "list")
    assert (
        "Replay its 3 dead letters: receiver replay --destination billing --delivery-state dead"
    ) in listing
    assert listing.count("Replay its") == 1
    assert to(sender, "pending", "billing") == []


@pytest.mark.parametrize("via", ["cli", "admin-api"])
def test_replayed_dead_letters_go_only_where_they_died_and_clear_once_delivered(
    via: str, dead_in_billing: tuple[Rivya, Operator, Downstream, Downstream, list[str]]
) -> None:
    sender, operator, healthy, billing, event_ids = dead_in_billing
    billing.respond = ANSWER_200
    queued = {"dry_run": False, "deliveries": EVENTS, "by_destination": {"billing": EVENTS}}
    if via == "cli":
        result = run_cli(
            "replay",
            "--delivery-state",
            "dead",
            "--yes",
            "--json",
            env=operator.server.env,
            cwd=operator.server.workdir,
        )
        assert json.loads(result.stdout) == queued
        (audit,) = [json.loads(line) for line in result.stderr.splitlines()]
        assert (audit["what"], audit["count"], audit["by_destination"]) == (
            "replay",
            EVENTS,
            {"billing": EVENTS},
        )
    else:
        answer = sender.admin("/replay", "POST", json=DEAD)
        assert (answer.status_code, answer.json()) == (202, queued)
    # Queued, they leave the dead letters at once: a second replay finds nothing to send.
    assert to(sender, "dead", "billing") == []
    again = sender.admin("/replay", "POST", json=DEAD).json()
    assert (again["deliveries"], again["by_destination"]) == (0, {})
    wait_until(lambda: len(to(sender, "recovered", "billing")) == EVENTS, timeout=10)

    assert sorted(healthy.ids()) == sorted(event_ids)  # nothing twice
    assert sorted(billing.ids()) == sorted(event_ids * 3)  # two that failed, one delivered
    assert operator.json("deliveries", "list", "--state", "dead")["deliveries"] == []
    recovered = operator.json("deliveries", "list", "--state", "recovered")["deliveries"]
    assert sorted(d["event_id"] for d in recovered) == sorted(event_ids)
    assert {d["destination"] for d in recovered} == {"billing"}
    deliveries = {"delivered": 2 * EVENTS, "recovered": EVENTS}
    assert operator.json("stats")["deliveries"] == deliveries
    assert sender.admin("/stats").json()["deliveries"] == deliveries
    dead_gauge = ("receiver_deliveries", (("destination", "billing"), ("state", "dead")))
    recovered_gauge = ("receiver_deliveries", (("destination", "billing"), ("state", "recovered")))
    wait_until(lambda: scrape(sender.server.url).get(dead_gauge) == 0, timeout=5)
    assert scrape(sender.server.url)[recovered_gauge] == EVENTS
    # The event's story, in order: default delivered; billing dead (now recovered), then
    # delivered.
    story = operator.json("events", "show", event_ids[0])["deliveries"]
    assert [(d["destination"], d["state"]) for d in story] == [
        ("default", "delivered"),
        ("billing", "recovered"),
        ("billing", "delivered"),
    ]
    assert "Replay its" not in operator.run("destinations", "list")


def test_two_cli_replays_at_once_queue_each_dead_letter_once(
    dead_in_billing: tuple[Rivya, Operator, Downstream, Downstream, list[str]],
) -> None:
    """Two operators run the same replay at the same moment, in two processes: between
    them, each dead letter is queued once (the loser reports what it did not queue as 0).
    The server is stopped first: billing still fails, and a running forwarder would let the
    first replay's deliveries die again in milliseconds, new dead letters the second replay
    rightly queues."""
    _, operator, _, _, event_ids = dead_in_billing
    operator.server.stop()
    args = ["replay", "--delivery-state", "dead", "--yes", "--json"]
    env, cwd = operator.server.env, operator.server.workdir
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_cli(*args, env=env, cwd=cwd), range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sum(json.loads(r.stdout)["deliveries"] for r in results) == EVENTS
    for event_id in event_ids:
        shown = operator.json("events", "show", event_id)["deliveries"]
        billing = [d["state"] for d in shown if d["destination"] == "billing"]
        assert sorted(billing) == ["pending", "replayed"]


def test_the_cli_asks_with_the_numbers_it_queues(
    dead_in_billing: tuple[Rivya, Operator, Downstream, Downstream, list[str]],
) -> None:
    """Resolved before it asks: the question's numbers are exactly what is then queued."""
    _, operator, _, _, _ = dead_in_billing
    asked = run_cli(
        "replay",
        "--delivery-state",
        "dead",
        "--destination",
        "billing",
        env=operator.server.env,
        cwd=operator.server.workdir,
        answer="y\n",
    )
    assert "Replay 3 deliveries: billing 3? [y/N]" in asked.stderr
    assert asked.stdout.strip() == "Queued 3 deliveries: billing 3."


def test_replay_takes_only_pending_delivered_or_dead(
    dead_in_billing: tuple[Rivya, Operator, Downstream, Downstream, list[str]],
) -> None:
    """replayed and recovered are history: the CLI, the admin API and the console refuse
    them, naming the three they take, and queue nothing."""
    sender, operator, _, _, _ = dead_in_billing
    for state in ("replayed", "recovered", "orphaned"):
        refused = run_cli(
            "replay",
            "--delivery-state",
            state,
            "--dry-run",
            env=operator.server.env,
            cwd=operator.server.workdir,
        )
        assert refused.returncode == 2
        assert "'pending', 'delivered', 'dead'" in refused.stderr
        answer = sender.admin("/replay", "POST", json={"delivery_state": state})
        assert answer.status_code == 400
        assert "'pending', 'delivered' or 'dead'" in answer.json()["detail"]
    assert to(sender, "pending", "billing") == []
