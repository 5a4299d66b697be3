"""The token bucket behind `max_per_second` (receiver/forward/rate.py), and the lane's use
of it: never more attempts in any window than the burst plus the rate, and never a claim it
cannot start."""

import collections
import dataclasses
import itertools

from hypothesis import given
from hypothesis import strategies as st

from receiver.forward.lanes import Lane
from receiver.forward.rate import BURST_SECONDS, MAX_PER_SECOND, MIN_PER_SECOND, TokenBucket
from receiver.store.deliveries import ClaimedDelivery
from tests.helpers import destination

RATES = st.floats(min_value=MIN_PER_SECOND, max_value=MAX_PER_SECOND)
# Rates a lane meets in practice, where a run of takes spans many tokens.
COMMON_RATES = st.floats(min_value=0.01, max_value=10_000)
GAPS = st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200)
# Whole-token slack for the float sums of a long run of refills.
EPSILON = 1e-6


def _times(gaps: list[float]) -> list[float]:
    return list(itertools.accumulate(gaps, initial=1000.0))


@given(rate=COMMON_RATES, gaps=GAPS)
def test_no_window_holds_more_than_the_burst_and_the_rate(rate: float, gaps: list[float]) -> None:
    """However takes are timed, the attempts started in any window of length w are at most
    the bucket's capacity plus rate * w."""
    times = _times(gaps)
    bucket = TokenBucket(rate, times[0])
    taken = [now for now in times if bucket.take(now)]
    for first, last in itertools.combinations(range(len(taken)), 2):
        window = taken[last] - taken[first]
        assert last - first + 1 <= bucket.capacity + rate * window + EPSILON


@given(rate=RATES)
def test_capacity_is_a_quarter_second_and_at_least_one(rate: float) -> None:
    assert TokenBucket(rate, 0.0).capacity == max(1.0, rate * BURST_SECONDS)


@given(rate=RATES, now=st.floats(min_value=0, max_value=1e6))
def test_a_new_bucket_holds_one_token(rate: float, now: float) -> None:
    """A lane's first moment sends one attempt, not a burst on top of its rate."""
    bucket = TokenBucket(rate, now)
    assert bucket.available(now) == 1
    assert bucket.take(now)
    assert not bucket.take(now)


@given(rate=COMMON_RATES, gaps=GAPS)
def test_wait_is_exactly_when_the_next_token_comes(rate: float, gaps: list[float]) -> None:
    """After any run of takes, wait() is 0 when a token is there; otherwise no token is
    there just before it ends, and one is when it ends."""
    times = _times(gaps)
    bucket = TokenBucket(rate, times[0])
    for now in times:
        bucket.take(now)
    now = times[-1]
    wait = bucket.wait(now)
    assert (wait == 0) == (bucket.available(now) >= 1)
    if wait > 0:
        before = dataclasses.replace(bucket)
        assert before.available(now + wait * (1 - 1e-6)) == 0
        assert bucket.take(now + wait + EPSILON / rate)


@given(rate=COMMON_RATES, now=st.floats(min_value=0, max_value=1e6), late=st.floats(0, 1e6))
def test_time_going_back_adds_nothing(rate: float, now: float, late: float) -> None:
    """A clock read before the last refill (another task's `now`) neither adds nor takes
    tokens."""
    bucket = TokenBucket(rate, now + late)
    bucket.take(now + late)
    left = bucket.tokens
    assert bucket.available(now) == int(left)
    assert bucket.tokens == left


def _lane(rate: float | None, max_in_flight: int) -> Lane:
    shaped = dataclasses.replace(destination(max_in_flight=max_in_flight), max_per_second=rate)
    return Lane(shaped)


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    max_in_flight=st.integers(1, 64),
    in_flight=st.integers(0, 64),
    claimed=st.integers(0, 200),
    elapsed=st.floats(0, 10),
    taken=st.integers(0, 300),
)
def test_a_lane_claims_no_more_than_its_tokens(
    rate: float, max_in_flight: int, in_flight: int, claimed: int, elapsed: float, taken: int
) -> None:
    """Whatever a lane holds, what it asks for and what it already holds unstarted are
    never more than the tokens it has: nothing claimed waits on the rate past its lease."""
    lane = _lane(rate, max_in_flight)
    assert lane.bucket is not None
    start = lane.bucket.updated_at
    for _ in range(taken):
        lane.bucket.take(start + elapsed / 2)
    lane.in_flight = min(in_flight, max_in_flight)
    held = ClaimedDelivery(1, lane.destination.name, "evt_1", 0, None, b"{}")
    lane.claimed = collections.deque((0.0, held) for _ in range(claimed))
    now = start + elapsed
    wanted = lane.wanted(now)
    assert wanted >= 0
    assert wanted <= max(0, lane.bucket.available(now) - claimed)


def test_a_lane_without_a_rate_claims_its_width() -> None:
    """No `max_per_second`: no bucket, and a refill of twice its width, as before."""
    lane = _lane(None, 8)
    assert lane.bucket is None
    assert lane.wanted(0.0) == 16
