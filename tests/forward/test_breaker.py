"""A lane pauses after TRIP_AFTER failures in a row, then probes one attempt at a time."""

import time
from collections.abc import Callable

from receiver.forward.breaker import FIRST_PAUSE_SECONDS, MAX_PAUSE_SECONDS, TRIP_AFTER, Breaker
from tests.conftest import Rivya, Sensitive
from tests.helpers import Downstream, Received, ReceiverProcess, make_event, wait_until

WIDTH = 32
BACKLOG = 100


def tripped(now: float = 0.0) -> Breaker:
    breaker = Breaker()
    changes = [breaker.record(False, now) for _ in range(TRIP_AFTER)]
    assert changes == [None] * (TRIP_AFTER - 1) + ["destination_paused"]
    return breaker


def test_failures_short_of_the_threshold_or_broken_by_a_success_keep_the_full_width() -> None:
    breaker = Breaker()
    for _ in range(3):
        for _ in range(TRIP_AFTER - 1):
            assert breaker.record(False, 0.0) is None
        assert breaker.record(True, 0.0) is None
    assert breaker.slots(WIDTH, 0.0) == WIDTH


def test_a_tripped_lane_starts_nothing_during_the_pause_then_one_probe() -> None:
    breaker = tripped(now=10.0)
    assert breaker.slots(WIDTH, 10.0) == 0
    assert breaker.slots(WIDTH, 10.0 + FIRST_PAUSE_SECONDS - 0.01) == 0
    assert breaker.slots(WIDTH, 10.0 + FIRST_PAUSE_SECONDS) == 1


def test_attempts_started_before_the_pause_and_failing_during_it_do_not_lengthen_it() -> None:
    breaker = tripped(now=10.0)
    assert breaker.record(False, 10.5) is None
    assert breaker.slots(WIDTH, 10.0 + FIRST_PAUSE_SECONDS) == 1


def test_each_failed_probe_doubles_the_pause_up_to_the_maximum() -> None:
    breaker = tripped()
    now, pauses = 0.0, []
    for _ in range(10):
        now = breaker.paused_until or now
        assert breaker.slots(WIDTH, now) == 1
        assert breaker.record(False, now) == "destination_paused"
        pauses.append(breaker.pause_seconds)
    assert pauses[:3] == [2 * FIRST_PAUSE_SECONDS, 4 * FIRST_PAUSE_SECONDS, 8 * FIRST_PAUSE_SECONDS]
    assert pauses[-1] == MAX_PAUSE_SECONDS


def test_a_successful_probe_reopens_the_full_width_and_resets_the_pause() -> None:
    breaker = tripped()
    assert breaker.record(False, FIRST_PAUSE_SECONDS) == "destination_paused"
    assert breaker.record(True, 100.0) == "destination_resumed"
    assert breaker.slots(WIDTH, 100.0) == WIDTH
    assert (breaker.failures_in_a_row, breaker.pause_seconds) == (0, FIRST_PAUSE_SECONDS)
    changes = [breaker.record(False, 100.0) for _ in range(TRIP_AFTER)]
    assert changes[-1] == "destination_paused"
    assert breaker.paused_until == 100.0 + FIRST_PAUSE_SECONDS


def test_a_subscriber_failing_everything_is_paused_not_sent_its_backlog_then_resumes(
    start_server: Callable[..., ReceiverProcess],
    own_downstream: Callable[..., Downstream],
    secrets_in_use: tuple[str, str],
    sensitive: Sensitive,
) -> None:
    """Through a real server: a sink answering 503 is sent fewer requests than it has
    events waiting; once it answers 200, a probe finds it and every event arrives once."""
    failing, delivered = [True], []

    def respond(request: Received, _: int) -> tuple[int, dict[str, str]]:
        if failing[0]:
            return 503, {}
        delivered.append(request.headers["webhook-id"])
        return 200, {}

    sink = own_downstream(respond)
    process = start_server(forward_url=sink.url, forward_retry_schedule=",".join(["0.2"] * 20))
    rivya = Rivya(process, secrets_in_use[0], sensitive)
    events = [make_event() for _ in range(BACKLOG)]
    for event in events:
        assert rivya.send(event).status_code == 200
    wait_until(lambda: '"destination_paused"' in process.output(), timeout=30)
    time.sleep(2 * FIRST_PAUSE_SECONDS)
    # Without the pause, each of them would have been tried several times by now.
    assert len(sink.received) < BACKLOG
    failing[0] = False
    wait_until(lambda: len(delivered) >= BACKLOG, timeout=60)
    assert '"destination_resumed"' in process.output()
    time.sleep(1)
    assert sorted(delivered) == sorted(e["id"] for e in events)
