"""Disabling and enabling a destination by hand, through a real `receiver serve`, the CLI in
its own process and the admin API: each says what changed or that nothing did, is audited
with who asked, refuses an unknown name or a bad reason with one line (exit 1) or a 4xx that
changes nothing, and a destination disabled by hand is sent nothing until it is enabled."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from receiver.store.destination_states import MAX_REASON_CHARS
from tests.conftest import Rivya
from tests.helpers import (
    HTTP,
    Downstream,
    Operator,
    ReceiverProcess,
    make_event,
    run_cli,
    wait_until,
    write_destinations,
)

# Many polls (0.5 s): a destination that is sent anything while disabled would have been.
SETTLE_SECONDS = 2.0


@pytest.fixture
def started(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    tmp_path: Path,
) -> Callable[..., tuple[ReceiverProcess, Downstream]]:
    """A server with `default` and `billing` (whose sink is returned), settings overridden."""

    def start(**overrides: str) -> tuple[ReceiverProcess, Downstream]:
        billing = own_downstream()
        table = {"name": "billing", "url": billing.url, "signing_secrets": new_secrets()}
        file = write_destinations(tmp_path / "d.toml", table)
        return start_server(destinations_file=file, **overrides), billing

    return start


def audits(text: str, what: str) -> list[tuple[str, str, int]]:
    lines = [orjson.loads(line) for line in text.splitlines() if '"audit"' in line]
    return [(a["who"], a["destination"], a["count"]) for a in lines if a.get("what") == what]


def billing_entry(operator: Operator) -> dict[str, Any]:
    listed = operator.json("destinations", "list")["destinations"]
    (entry,) = [e for e in listed if e["destination"] == "billing"]
    assert isinstance(entry, dict)
    return entry


def test_cli_disable_and_enable_say_what_changed_are_audited_and_obeyed(
    started: Callable[..., tuple[ReceiverProcess, Downstream]], rivya: Rivya
) -> None:
    server, billing = started()
    operator = Operator(server)

    def cli(*args: str) -> Any:
        return run_cli("destinations", *args, env=server.env, cwd=server.workdir)

    done = cli("disable", "billing", "--reason", "  retired for the move  ")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "Disabled billing: its pending deliveries wait until it is enabled."
    )
    assert audits(done.stderr, "disable_destination") == [("cli", "billing", 1)]
    assert "retired for the move" not in done.stderr, "a free-text reason is never logged"
    entry = billing_entry(operator)
    assert (entry["disabled_by"], entry["disabled_reason"]) == ("cli", "retired for the move")

    again = cli("disable", "billing", "--reason", "another", "--json")
    assert again.returncode == 0, again.stderr
    shown = orjson.loads(again.stdout)
    assert (shown["changed"], shown["disabled"], shown["reason"]) == (
        False,
        True,
        "retired for the move",
    ), "the first reason is kept"
    assert audits(again.stderr, "disable_destination") == [("cli", "billing", 0)]

    sender = Rivya(server, rivya.secret, rivya.sensitive)
    event = make_event()
    assert sender.send(event).status_code == 200
    time.sleep(SETTLE_SECONDS)
    assert billing.received == [], "a destination disabled by hand was sent an event"
    listed = operator.json("deliveries", "list", "--state", "disabled")["deliveries"]
    assert [(d["destination"], d["event_id"]) for d in listed] == [("billing", event["id"])]

    enabled = cli("enable", "billing")
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.startswith("Enabled billing (disabled since ")
    assert enabled.stdout.rstrip().endswith(
        ", by cli: retired for the move): its pending deliveries are sent."
    )
    wait_until(lambda: billing.ids() == [event["id"]], timeout=10, what="billing sent")
    assert billing_entry(operator)["disabled_at"] is None
    assert operator.run("destinations", "enable", "billing").strip() == (
        "billing was not disabled: nothing changed."
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("disable", "nope"), "Error: destination: 'nope' is not configured"),
        (("enable", "nope"), "Error: destination: 'nope' is not configured"),
        (("disable", "../billing"), "Error: destination: '../billing' is not configured"),
        (
            ("disable", "billing", "--reason", "x" * (MAX_REASON_CHARS + 1)),
            f"Error: reason: at most {MAX_REASON_CHARS} characters",
        ),
        (
            ("disable", "billing", "--reason", "two\nlines"),
            "Error: reason: no control, format or separator characters (line breaks, tabs,"
            " NUL, direction overrides, zero-width spaces)",
        ),
    ],
)
def test_cli_refuses_an_unknown_name_or_a_bad_reason_in_one_line_and_changes_nothing(
    started: Callable[..., tuple[ReceiverProcess, Downstream]],
    args: tuple[str, ...],
    said: str,
) -> None:
    server, _ = started()
    refused = run_cli("destinations", *args, env=server.env, cwd=server.workdir)
    assert (refused.returncode, refused.stderr.strip().splitlines()[-1]) == (1, said)
    assert "Traceback" not in refused.stderr
    assert billing_entry(Operator(server))["disabled_at"] is None


def test_admin_api_disables_and_enables_refusing_bad_input_with_a_4xx_that_changes_nothing(
    started: Callable[..., tuple[ReceiverProcess, Downstream]], rivya: Rivya
) -> None:
    server, _ = started()
    admin = Rivya(server, rivya.secret, rivya.sensitive)
    base = "/destinations/billing"
    unsigned = HTTP.post(f"{server.url}/admin{base}/disable", headers={"authorization": "no"})
    assert unsigned.status_code == 401
    for body, status in [
        ({"reason": "x" * (MAX_REASON_CHARS + 1)}, 400),
        ({"reason": "a\x00b"}, 400),
        ({"reason": "tab\there"}, 400),
        ({"reason": 5}, 400),
        ({"why": "extra"}, 400),
    ]:
        answer = admin.admin(f"{base}/disable", "POST", json=body)
        assert answer.status_code == status, (body, answer.text)
    assert admin.admin(f"{base}/disable", "POST", content=b"[").status_code == 400
    assert admin.admin(f"{base}/enable", "POST", json={"reason": "x"}).status_code == 400
    assert admin.admin("/destinations/nope/disable", "POST").status_code == 404
    assert admin.admin("/destinations/nope/enable", "POST").status_code == 404
    assert billing_entry(Operator(server))["disabled_at"] is None, "a refusal changed nothing"

    first = admin.admin(f"{base}/disable", "POST", json={"reason": "moving"})
    assert first.status_code == 200, first.text
    assert {k: first.json()[k] for k in ("destination", "disabled", "changed", "reason")} == {
        "destination": "billing",
        "disabled": True,
        "changed": True,
        "reason": "moving",
    }
    assert first.json()["disabled_by"] == "admin-api"
    assert admin.admin(f"{base}/disable", "POST").json()["changed"] is False
    ended = admin.admin(f"{base}/enable", "POST")
    assert (ended.status_code, ended.json()["changed"], ended.json()["reason"]) == (
        200,
        True,
        "moving",
    )
    assert admin.admin(f"{base}/enable", "POST", json={}).json()["changed"] is False
    assert audits(server.output(), "disable_destination") == [
        ("admin-api", "billing", 1),
        ("admin-api", "billing", 0),
    ]
    assert audits(server.output(), "enable_destination") == [
        ("admin-api", "billing", 1),
        ("admin-api", "billing", 0),
    ]


@pytest.mark.postgresql_only
def test_enabling_on_postgresql_wakes_every_forwarder_at_once(
    started: Callable[..., tuple[ReceiverProcess, Downstream]], rivya: Rivya
) -> None:
    """A poll of 60 s: only the enable's NOTIFY can have the waiting delivery sent soon."""
    server, billing = started(forward_poll_seconds="60")
    operator = Operator(server)
    operator.run("destinations", "disable", "billing")
    event = make_event()
    assert Rivya(server, rivya.secret, rivya.sensitive).send(event).status_code == 200
    time.sleep(SETTLE_SECONDS)
    assert billing.received == []
    operator.run("destinations", "enable", "billing")
    wait_until(lambda: billing.ids() == [event["id"]], timeout=10, what="sent on the NOTIFY")


def test_a_destination_removed_while_disabled_can_still_be_enabled_not_disabled(
    started: Callable[..., tuple[ReceiverProcess, Downstream]], tmp_path: Path
) -> None:
    """Its row would otherwise stay for ever (and disable it again if it came back)."""
    server, _ = started()
    Operator(server).run("destinations", "disable", "billing")
    secret = server.env["RECEIVER_FORWARD_SIGNING_SECRETS"]
    table = {"name": "other", "url": "http://127.0.0.1:9/hooks", "signing_secrets": secret}
    file = write_destinations(tmp_path / "removed.toml", table)
    removed = {**server.env, "RECEIVER_DESTINATIONS_FILE": file}
    refused = run_cli("destinations", "disable", "billing", env=removed, cwd=server.workdir)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "Error: destination: 'billing' is not configured"
    enabled = run_cli("destinations", "enable", "billing", env=removed, cwd=server.workdir)
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.startswith("Enabled billing (disabled since ")
