"""Isolation between destinations: a healthy destination's deliveries take about as long
beside one that never answers and one that answers 503 to everything as they do alone."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.conftest import Rivya, Sensitive
from tests.helpers import (
    Downstream,
    ReceiverProcess,
    always,
    make_event,
    only,
    wait_until,
    write_destinations,
)
from tests.reliability.conftest import Figures

# Enough that a drain outlasts the machine's pauses and the bad lanes' first moments (with
# 500, a drain took a tenth of a second on a fast day and one pause moved the ratio 1.7x).
ISOLATION_EVENTS = 2000
# Stored by several senders at once, so that the backlog takes seconds to build, not
# minutes; the drains, which are what is measured, start after.
SENDERS = 8
# Rounds of each, interleaved, the best of each compared: a pause of the machine's in one
# round moves a sum, not the best; interference from the bad destinations slows every round
# beside them, so it shows in the best one too.
ROUNDS = 2


def test_a_hanging_and_a_failing_destination_do_not_slow_a_healthy_one(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    new_secrets: Callable[[], str],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
    tmp_path: Path,
    new_database: Callable[[Path], str],
    backend: str,
    figures: Figures,
) -> None:
    """The healthy destination's deliveries take about as long beside a sink that
    never answers and one that answers 503 to everything as they do alone (within 1.5x,
    best round against best round)."""

    def drain(folder: str, bad: bool) -> float:
        healthy = own_downstream()
        tables: list[dict[str, Any]] = [
            {"name": "healthy", "url": healthy.url, "signing_secrets": new_secrets()}
        ]
        if bad:
            hanging = own_downstream(delay=600)  # takes the request, never answers
            failing = own_downstream(always(503))
            tables += [
                {"name": "hanging", "url": hanging.url, "signing_secrets": new_secrets()},
                {"name": "failing", "url": failing.url, "signing_secrets": new_secrets()},
            ]
        (tmp_path / folder).mkdir()
        file = write_destinations(tmp_path / folder / "destinations.toml", *tables)
        database_url = new_database(tmp_path / folder)
        # Stored first, with no forwarder running, so that every lane starts with a backlog.
        server = start_server("serve", "--no-forwarder", database_url=database_url, **only(file))
        rivya = Rivya(server, secrets_in_use[0], sensitive)
        with ThreadPoolExecutor(SENDERS) as senders:
            answers = senders.map(lambda _: rivya.send(make_event()), range(ISOLATION_EVENTS))
            assert {answer.status_code for answer in answers} == {200}
        server.stop()
        worker = start_server(
            "worker", database_url=database_url, forward_retry_schedule="30", **only(file)
        )
        wait_until(lambda: len(healthy.received) >= ISOLATION_EVENTS, timeout=120)
        worker.stop()
        assert len(set(healthy.ids())) == ISOLATION_EVENTS
        if bad:
            assert hanging.received, "the hanging destination was tried"
            assert failing.received, "the failing destination was tried"
        return healthy.received[-1].at - healthy.received[0].at

    alone_rounds, beside_rounds = [], []
    for round_ in range(ROUNDS):
        alone_rounds.append(drain(f"alone-{round_}", bad=False))
        beside_rounds.append(drain(f"beside-{round_}", bad=True))
    alone, beside_bad_ones = min(alone_rounds), min(beside_rounds)
    figures.add(
        f"destination isolation, {backend}",
        alone_ms=round(alone * 1000),
        beside_hanging_and_503_ms=round(beside_bad_ones * 1000),
    )
    assert beside_bad_ones <= 1.5 * alone, (alone, beside_bad_ones)
