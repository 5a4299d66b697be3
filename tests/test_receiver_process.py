"""The suite's own `receiver serve` handle: a server is ready only once it listens on its own
port, and a first start whose free port another process took meanwhile takes another."""

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import HTTP, ReceiverProcess


@pytest.mark.any_backend  # about the suite's process handle, not storage
def test_a_first_start_whose_port_was_taken_takes_another_and_is_not_fooled_by_its_taker(
    tmp_path: Path, server_env: dict[str, str], new_database: Callable[[Path], str]
) -> None:
    env = {**server_env, "RECEIVER_DATABASE_URL": new_database(tmp_path)}
    process = ReceiverProcess(tmp_path, env)
    taken = process.port
    with socket.socket() as taker:
        # Another test's listener on the same port: it accepts, and answers nothing.
        taker.bind(("127.0.0.1", taken))
        taker.listen()
        process.start()
        try:
            assert process.port != taken
            assert f":{taken}" not in process.url
            assert HTTP.get(f"{process.url}/readyz", timeout=5).status_code == 200
        finally:
            process.stop()
