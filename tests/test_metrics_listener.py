"""RECEIVER_METRICS_PORT as `receiver serve` is started and stopped with it: a port that
cannot work is a one-line error naming the setting, before anything starts; and the two
listeners stop as the one listener does."""

import signal
from pathlib import Path

import httpx

from tests.helpers import HTTP, ReceiverProcess, free_port, new_secret, run_cli


def settings_for(folder: Path, secret: str, **overrides: str) -> dict[str, str]:
    return {
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'receiver.db'}",
        "RECEIVER_SIGNING_SECRETS": secret,
        **overrides,
    }


def test_metrics_port_equal_to_the_main_port_stops_the_start_naming_it(tmp_path: Path) -> None:
    """The two listeners would take the same port: it was a bind error about an address,
    after the application had started, and exit 3."""
    port = free_port()
    secret = new_secret()
    result = run_cli(
        "serve",
        "--port",
        str(port),
        env=settings_for(tmp_path, secret, RECEIVER_METRICS_PORT=str(port)),
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: RECEIVER_METRICS_PORT: {port} is the main port (--port); give it another"
    ]
    assert secret not in result.stdout + result.stderr
    assert not (tmp_path / "receiver.db").exists(), "nothing started"


def test_ctrl_c_stops_both_listeners_as_cleanly_as_the_one(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C under `make run`) exits 0 after a graceful stop, with or without the
    metrics listener: with it, it was click's "Aborted!" and exit 1."""
    metrics_port = free_port()
    secret = new_secret()
    alone = ReceiverProcess(tmp_path, settings_for(tmp_path, secret)).start()
    assert alone.stop(signal.SIGINT) == 0
    both = ReceiverProcess(
        tmp_path, settings_for(tmp_path, secret, RECEIVER_METRICS_PORT=str(metrics_port))
    ).start()
    assert HTTP.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 200
    assert both.stop(signal.SIGINT) == 0, both.output()
    assert "Aborted!" not in both.output()
    assert both.output().count("Application shutdown complete.") == 1
    try:
        HTTP.get(f"http://127.0.0.1:{metrics_port}/metrics")
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the metrics listener outlived the stop")
