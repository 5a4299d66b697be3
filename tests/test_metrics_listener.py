"""RECEIVER_METRICS_PORT as `receiver serve` is started with it: a port that cannot work is
a one-line error naming the setting, before anything starts."""

from pathlib import Path

from tests.helpers import free_port, new_secret, run_cli


def test_metrics_port_equal_to_the_main_port_stops_the_start_naming_it(tmp_path: Path) -> None:
    """The two listeners would take the same port: it was a bind error about an address,
    after the application had started, and exit 3."""
    port = free_port()
    secret = new_secret()
    result = run_cli(
        "serve",
        "--port",
        str(port),
        env={
            "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'receiver.db'}",
            "RECEIVER_SIGNING_SECRETS": secret,
            "RECEIVER_METRICS_PORT": str(port),
        },
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: RECEIVER_METRICS_PORT: {port} is the main port (--port); give it another"
    ]
    assert secret not in result.stdout + result.stderr
    assert not (tmp_path / "receiver.db").exists(), "nothing started"
