"""The retry policy: what an attempt's answer means, and when the next attempt is due."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.forward.retries import JITTER, RetryPolicy
from receiver.store.deliveries import DeliveryState

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy((5.0, 300.0, 1800.0))


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    assert POLICY.judge(1, status, None, NOW).state is DeliveryState.DELIVERED


def test_410_is_dead_at_once() -> None:
    assert POLICY.judge(1, 410, None, NOW).state is DeliveryState.DEAD


@pytest.mark.parametrize("status", [None, 301, 400, 404, 429, 500, 503])
def test_other_answers_and_errors_are_retried_until_the_schedule_ends(status: int | None) -> None:
    for attempt in (1, 2, 3):
        assert POLICY.judge(attempt, status, None, NOW).state is DeliveryState.PENDING
    assert POLICY.max_attempts == 4
    assert POLICY.judge(4, status, None, NOW).state is DeliveryState.DEAD


def test_an_empty_schedule_means_one_attempt() -> None:
    assert RetryPolicy(()).judge(1, 500, None, NOW).state is DeliveryState.DEAD


@given(attempt=st.integers(1, 3))
def test_delays_follow_the_schedule_within_the_jitter(attempt: int) -> None:
    verdict = POLICY.judge(attempt, 503, None, NOW)
    assert verdict.next_attempt_at is not None
    delay = (verdict.next_attempt_at - NOW).total_seconds()
    planned = POLICY.schedule[attempt - 1]
    assert planned * (1 - JITTER) <= delay <= planned * (1 + JITTER)


def test_retry_after_stretches_a_shorter_delay_but_never_shortens_one() -> None:
    longer = POLICY.judge(1, 429, "120", NOW).next_attempt_at
    assert longer == NOW + timedelta(seconds=120)
    shorter = POLICY.judge(3, 503, "1", NOW).next_attempt_at
    assert shorter is not None
    assert shorter - NOW >= timedelta(seconds=1800 * (1 - JITTER))
