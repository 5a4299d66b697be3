"""The `receiver` command as an operator types it: real processes, real exit codes."""

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Rivya, Sensitive
from tests.helpers import (
    Downstream,
    Operator,
    ReceiverProcess,
    always,
    free_port,
    make_event,
    new_secret,
    run_cli,
    wait_until,
    write_destinations,
)

receiver = run_cli


def test_secret_new_prints_a_fresh_32_byte_whsec_secret(tmp_path: Path) -> None:
    first = receiver("secret", "new", env={}, cwd=tmp_path).stdout.strip()
    second = receiver("secret", "new", env={}, cwd=tmp_path).stdout.strip()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert first != second


def test_send_test_is_accepted_by_a_running_server(
    start_server: Callable[..., ReceiverProcess], server_env: dict[str, str], tmp_path: Path
) -> None:
    process = start_server()
    for event_type in ("generation.succeeded", "generation.failed"):
        result = receiver(
            "send-test",
            "--url",
            f"{process.url}/webhooks/rivya",
            "--type",
            event_type,
            env=server_env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert '"status":"accepted"' in result.stdout


def test_send_test_fails_clearly_when_not_accepted(
    start_server: Callable[..., ReceiverProcess], server_env: dict[str, str], tmp_path: Path
) -> None:
    process = start_server()
    env = {**server_env, "RECEIVER_SIGNING_SECRETS": new_secret()}
    result = receiver("send-test", "--url", f"{process.url}/webhooks/rivya", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "HTTP 401" in result.stdout
    assert result.stderr.strip() == "Error: the receiver did not accept the test event"


def test_send_test_to_nothing_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/webhooks/rivya"
    env = {"RECEIVER_SIGNING_SECRETS": new_secret()}
    result = receiver("send-test", "--url", url, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: could not reach {url}: ClientConnectorError"


def test_missing_signing_secret_stops_serve_naming_the_variable(tmp_path: Path) -> None:
    result = receiver("serve", "--port", str(free_port()), env={}, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: RECEIVER_SIGNING_SECRETS: is required"
    assert "Traceback" not in result.stderr


def test_an_unusable_database_url_stops_serve_in_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    """It was a traceback from the first connection, the URL (password included) in it."""
    password = "pa55-w0rd-never-shown"  # noqa: S105 - a test's stand-in
    for url in (f"postgresql+asyncpg://u:{password}@db:99999/r", f"mysql://u:{password}@db/r"):
        env = {"RECEIVER_SIGNING_SECRETS": new_secret(), "RECEIVER_DATABASE_URL": url}
        result = receiver("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.startswith("Error: RECEIVER_DATABASE_URL: ")
        assert len(result.stderr.strip().splitlines()) == 1
        assert password not in result.stderr + result.stdout


def test_env_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RECEIVER_SIGNING_SECRETS=whsec_c2hvcnQ=\n")
    result = receiver("migrate", env={}, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: RECEIVER_SIGNING_SECRETS: a signing key needs")


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    env = {
        "RECEIVER_SIGNING_SECRETS": new_secret(),
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'r.db'}",
    }
    for _ in range(2):
        result = receiver("migrate", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "The database schema is up to date." in result.stdout
    assert (tmp_path / "nested" / "r.db").stat().st_size > 0


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = receiver("serve", "--port", "not-a-port", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_json_output_of_secret_new_and_send_test(
    start_server: Callable[..., ReceiverProcess], server_env: dict[str, str], tmp_path: Path
) -> None:
    secret = json.loads(receiver("secret", "new", "--json", env={}, cwd=tmp_path).stdout)
    assert secret["secret"].startswith("whsec_")
    process = start_server()
    result = receiver(
        "send-test",
        "--url",
        f"{process.url}/webhooks/rivya",
        "--json",
        env=server_env,
        cwd=tmp_path,
    )
    sent = json.loads(result.stdout)
    assert (sent["http_status"], sent["answer"]["status"]) == (200, "accepted")
    assert sent["answer"]["event_id"] == sent["event_id"]


def test_every_command_has_help(tmp_path: Path) -> None:
    commands = [
        ("serve",),
        ("worker",),
        ("migrate",),
        ("secret", "new"),
        ("send-test",),
        ("events", "list"),
        ("events", "show"),
        ("records", "show"),
        ("deliveries", "list"),
        ("stats",),
        ("replay",),
        ("reprocess",),
        ("prune",),
    ]
    for command in commands:
        result = receiver(*command, "--help", env={}, cwd=tmp_path)
        assert result.returncode == 0, command
        assert result.stdout.startswith("Usage: "), command


@pytest.fixture
def delivered_and_dead(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    new_secrets: Callable[[], str],
    tmp_path: Path,
) -> tuple[Operator, Rivya, dict[str, Any]]:
    """One event, delivered to `default` at the first attempt and dead at `billing` (503,
    twice)."""
    billing = {"name": "billing", "url": own_downstream(always(503)).url}
    server = start_server(
        destinations_file=write_destinations(
            tmp_path / "d.toml", billing | {"signing_secrets": new_secrets()}
        ),
        forward_retry_schedule="0.2",
    )
    sender, operator = Rivya(server, secrets_in_use[0], sensitive), Operator(server)
    event = make_event()
    assert sender.send(event).status_code == 200

    def finished() -> set[str]:
        return {d["state"] for d in operator.json("events", "show", event["id"])["deliveries"]}

    wait_until(lambda: finished() == {"delivered", "dead"}, timeout=20)
    return operator, sender, event


def test_an_unknown_destination_is_refused_in_the_same_line_by_every_command(
    delivered_and_dead: tuple[Operator, Rivya, dict[str, Any]],
) -> None:
    operator, _, event = delivered_and_dead
    refusal = "Error: destination: 'nope' is not configured\n"
    for command in (
        ("deliveries", "list", "--destination", "nope"),
        ("deliveries", "list", "--destination", "nope", "--state", "dead"),
        ("replay", event["id"], "--destination", "nope"),
        ("replay", event["id"], "--destination", "nope", "--to", "http://127.0.0.1:9/x"),
        ("replay", "--since", "1h", "--destination", "nope", "--dry-run"),
    ):
        for as_json in ((), ("--json",)):
            assert operator.run(*command, *as_json, code=1) == refusal, command
    to_billing = operator.json("deliveries", "list", "--destination", "billing")["deliveries"]
    assert [d["state"] for d in to_billing] == ["dead"]
    # No longer configured, still named by its deliveries: listed, not refused.
    unconfigured = {
        k: v for k, v in operator.server.env.items() if k != "RECEIVER_DESTINATIONS_FILE"
    }
    listed = receiver(
        "deliveries",
        "list",
        "--destination",
        "billing",
        "--json",
        env=unconfigured,
        cwd=operator.server.workdir,
    )
    assert listed.returncode == 0, listed.stderr
    assert [d["destination"] for d in json.loads(listed.stdout)["deliveries"]] == ["billing"]


def test_finished_deliveries_show_no_next_attempt_and_counts_agree_with_their_nouns(
    delivered_and_dead: tuple[Operator, Rivya, dict[str, Any]],
) -> None:
    operator, _, event = delivered_and_dead
    stored = operator.json("deliveries", "list")["deliveries"]
    assert all(d["next_attempt_at"] for d in stored)  # what the rows still hold
    header, *rows = operator.run("deliveries", "list").splitlines()
    assert header.split()[-1] == "NEXT_ATTEMPT_AT"
    assert [row.split()[-1] for row in rows] == ["-", "-"]

    shown = operator.run("events", "show", event["id"])
    assert "to default: delivered, 1 attempt\n" in shown
    assert "to billing: dead, 2 attempts\n" in shown
    assert "next at" not in shown
    time.sleep(1)  # so that the event is older than the second below
    pruned = operator.run("prune", "--older-than", "1s", "--dry-run")
    assert pruned.startswith("Would remove 1 event, 2 deliveries and 3 attempts received before")


def test_audit_lines_go_to_stderr_as_log_lines_and_stdout_holds_the_answer_alone(
    delivered_and_dead: tuple[Operator, Rivya, dict[str, Any]],
) -> None:
    operator, _, event = delivered_and_dead
    server = operator.server
    changes = {
        "replay": ("replay", event["id"]),
        "reprocess": ("reprocess", event["id"]),
        "prune": ("prune", "--older-than", "30d"),
        "register": ("tasks", "register", "task_registered_by_hand"),
    }
    for what, command in changes.items():
        for log_format in ("json", "console"):
            env = server.env | {"RECEIVER_LOG_FORMAT": log_format}
            result = receiver(*command, env=env, cwd=server.workdir)
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip()
            assert "audit" not in result.stdout, (what, log_format)
            (line,) = result.stderr.splitlines()
            if log_format == "json":
                audit = json.loads(line)
                assert (audit["event"], audit["who"], audit["what"]) == ("audit", "cli", what)
            else:
                assert "audit" in line
                assert f"what={what}" in line
        # --json: stdout is one JSON document, the answer.
        answer = receiver(*command, "--json", env=server.env, cwd=server.workdir)
        assert "audit" not in json.dumps(json.loads(answer.stdout))


def test_result_urls_show_on_a_record_and_an_event_alone(
    delivered_and_dead: tuple[Operator, Rivya, dict[str, Any]],
) -> None:
    """Never in a listing, the admin API's or the CLI's (JSON or human), nor in a log line:
    they can be signed links."""
    operator, sender, event = delivered_and_dead
    url = event["data"]["result"]["primary_url"]
    for command in (
        ("events", "list"),
        ("records", "list"),
        ("deliveries", "list"),
        ("destinations", "list"),
        ("stats",),
    ):
        for as_json in ((), ("--json",)):
            result = receiver(
                *command, *as_json, env=operator.server.env, cwd=operator.server.workdir
            )
            assert result.returncode == 0, result.stderr
            assert url not in result.stdout + result.stderr, command
    for listing in ("/events", "/records", "/deliveries", "/destinations", "/stats"):
        answer = sender.admin(listing)
        assert answer.status_code == 200
        assert url not in answer.text, listing
    for shown in (("records", "show", event["data"]["id"]), ("events", "show", event["id"])):
        assert url in operator.run(*shown)
        assert url in json.dumps(operator.json(*shown))
    assert url in sender.admin(f"/records/{event['data']['id']}").json()["result_urls"]
    assert url not in operator.server.output()
