"""Crashes and stops under load: every event that got a 2xx is on disk afterwards and
reaches each destination at least once."""

import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Rivya
from tests.databases import stored_event_ids
from tests.helpers import (
    Downstream,
    Load,
    ReceiverProcess,
    new_secret,
    wait_until,
    write_destinations,
)
from tests.reliability.conftest import Figures

KILL_ROUNDS = 4
SENDERS = 8


def test_kill_9_under_load_loses_no_acknowledged_event(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    rivya: Rivya,
    figures: Figures,
    tmp_path: Path,
) -> None:
    downstream, mirror = own_downstream(), own_downstream()
    secret = new_secret()
    rivya.sensitive.add(secret)
    table = {"name": "mirror", "url": mirror.url, "signing_secrets": secret}
    destinations = write_destinations(tmp_path / "destinations.toml", table)
    process = start_server(forward_url=downstream.url, destinations_file=destinations)
    acknowledged: list[str] = []
    for round_ in range(KILL_ROUNDS):
        # A different moment in each round: after 40, 80, ... acknowledgements.
        kill_after = 40 * (round_ + 1)
        with Load(process.url, rivya.secret, rivya.sensitive.add, SENDERS) as load:
            wait_until(lambda: len(load.acknowledged) >= kill_after, timeout=30)  # noqa: B023 - used in this round only
            process.stop(signal.SIGKILL)
        acknowledged += load.acknowledged
        figures.add(
            "kill -9 under load",
            rounds=1,
            acknowledged=len(load.acknowledged),
            in_flight_at_kill=load.unanswered,
        )
        assert load.refused == {}, "a request was refused before the kill"

        process.start()
        missing = set(acknowledged) - stored_event_ids(process.env["RECEIVER_DATABASE_URL"])
        figures.add("kill -9 under load", lost=len(missing))
        assert missing == set(), f"round {round_ + 1}: acknowledged but not stored"

    for sink in (downstream, mirror):
        wait_until(
            lambda: set(acknowledged) <= set(sink.ids()),  # noqa: B023 - used in this round only
            timeout=60,
            what=lambda: f"{len(set(acknowledged) - set(sink.ids()))} still undelivered",  # noqa: B023
        )
        unsent = len(set(acknowledged) - set(sink.ids()))
        figures.add("kill -9 under load", not_forwarded=unsent)


def test_sigterm_under_load_answers_2xx_only_for_what_it_stored(
    start_server: Callable[..., ReceiverProcess],
    rivya: Rivya,
    figures: Figures,
) -> None:
    process = start_server()
    with Load(process.url, rivya.secret, rivya.sensitive.add, SENDERS) as load:
        wait_until(lambda: len(load.acknowledged) >= 100, timeout=30)
        assert process.stop(signal.SIGTERM) == -signal.SIGTERM
    # In-flight requests finish (200) or are refused (503); new ones find no listener.
    assert set(load.refused) <= {503}
    stored = stored_event_ids(process.env["RECEIVER_DATABASE_URL"])
    assert set(load.acknowledged) <= stored
    assert "Application shutdown complete." in process.output()
    figures.add(
        "SIGTERM under load",
        runs=1,
        acknowledged=len(load.acknowledged),
        refused_503=load.refused[503],
        unanswered=load.unanswered,
        lost=len(set(load.acknowledged) - stored),
    )
