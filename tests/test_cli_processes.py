"""A forked CLI run (tests/cli_processes.py) answers as `python -m receiver` started afresh."""

import os
from pathlib import Path

import pytest

from tests.cli_processes import _run_fresh, run_forked

TIMEOUT_SECONDS = 60.0


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),  # the program's name, as `python -m` gives it to click
        ("nope",),  # a usage error: exit 2
        ("events", "list"),  # a command with no settings: exit 1, naming the variable
        ("secret", "new", "--help"),
    ],
)
def test_a_forked_run_says_and_exits_as_a_fresh_interpreter(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    env = {"PATH": os.environ.get("PATH", "")}
    forked = run_forked(args, env, tmp_path, "", TIMEOUT_SECONDS)
    fresh = _run_fresh(args, env, tmp_path, "", TIMEOUT_SECONDS)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )


def test_a_forked_run_has_only_the_tests_environment_and_its_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's own variables stay out, and `.env` is read from the run's directory.
    (What is typed in reaches a confirmation: tests/operators/test_commands.py.)"""
    monkeypatch.setenv("RECEIVER_SIGNING_SECRETS", "whsec_of_the_runner_not_the_run")
    (tmp_path / ".env").write_text(f"RECEIVER_DATABASE_URL=sqlite+aiosqlite:///{tmp_path}/r.db\n")
    env = {"PATH": os.environ.get("PATH", "")}
    refused = run_forked(("stats",), env, tmp_path, "", TIMEOUT_SECONDS)
    assert (refused.returncode, refused.stderr) == (
        1,
        "Error: RECEIVER_SIGNING_SECRETS: is required\n",
    )
    secret = run_forked(("secret", "new"), env, tmp_path, "", TIMEOUT_SECONDS).stdout.strip()
    env |= {"RECEIVER_SIGNING_SECRETS": secret, "RECEIVER_ADMIN_TOKEN": "t" * 32}
    assert run_forked(("migrate",), env, tmp_path, "", TIMEOUT_SECONDS).returncode == 0
    assert (tmp_path / "r.db").is_file()
