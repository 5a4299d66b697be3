"""The `receiver` command as an operator types it: real processes, real exit codes."""

import base64
import json
from collections.abc import Callable
from pathlib import Path

from tests.helpers import ReceiverProcess, free_port, new_secret, run_cli

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
