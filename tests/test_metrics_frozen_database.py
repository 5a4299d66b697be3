"""receiver_database_up when PostgreSQL stops answering (its processes stopped, as a hung
host or a partition that drops packets leaves them): the cached gauges' computation gives
up after COUNT_TIMEOUT_SECONDS and says so, and resumes when the server does. On a cluster
of the test's own, so that freezing it stops no other test's server."""

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.metrics import COUNT_TIMEOUT_SECONDS
from tests.databases import PostgresServer
from tests.helpers import HTTP, ReceiverProcess, new_secret, wait_until

DATABASE_UP = re.compile(r"^receiver_database_up (\S+)$", re.M)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


def database_up(process: ReceiverProcess) -> float:
    response = HTTP.get(f"{process.url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    found = DATABASE_UP.search(response.text)
    assert found is not None, response.text
    return float(found[1])


def server_processes(data: Path) -> list[int]:
    """The postmaster (from its pid file) and every process it started."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def test_database_up_falls_to_0_when_the_server_stops_answering(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """It stayed 1, with every gauge frozen, for as long as the server was stopped: each
    scrape answered at once from the cache while one computation waited for ever."""
    process = ReceiverProcess(
        tmp_path,
        {
            "RECEIVER_DATABASE_URL": postgres.new_database(),
            "RECEIVER_SIGNING_SECRETS": new_secret(),
            "RECEIVER_METRICS_PUBLIC": "true",
            "RECEIVER_METRICS_REFRESH_SECONDS": "1",
        },
    ).start()
    try:
        assert database_up(process) == 1
        frozen = server_processes(postgres.data)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            wait_until(
                lambda: database_up(process) == 0,
                timeout=COUNT_TIMEOUT_SECONDS + 10,
                what="receiver_database_up 0 while the server is stopped",
            )
            assert time.monotonic() - stopped_at >= COUNT_TIMEOUT_SECONDS - 1
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        wait_until(lambda: database_up(process) == 1, timeout=20, what="database_up 1 again")
    finally:
        process.stop()
