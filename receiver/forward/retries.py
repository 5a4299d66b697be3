"""What happens after an attempt: delivered, retried later, or dead.

Pure: the forwarder passes in what the attempt returned and the clock. The schedule is
Settings' `forward_retry_schedule`; each delay is spread by +-20 % so that a downstream
coming back from an outage is not hit by every retry in the same second, and stretched
to the downstream's `Retry-After` when it asks for longer.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from receiver.outbound import parse_retry_after
from receiver.store.deliveries import DeliveryState

JITTER = 0.2


@dataclass(frozen=True, slots=True)
class Verdict:
    state: DeliveryState
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.schedule)

    def judge(
        self,
        attempts_made: int,
        status_code: int | None,
        retry_after: str | None,
        now: datetime,
    ) -> Verdict:
        """`attempts_made` counts the attempt being judged."""
        if status_code is not None and 200 <= status_code < 300:
            return Verdict(DeliveryState.DELIVERED)
        if status_code == 410 or attempts_made >= self.max_attempts:
            return Verdict(DeliveryState.DEAD)
        # Jitter spreads retries out; it guards no secret.
        spread = random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311  # nosec B311
        delay = self.schedule[attempts_made - 1] * spread
        delay = max(delay, parse_retry_after(retry_after, now) or 0.0)
        return Verdict(DeliveryState.PENDING, now + timedelta(seconds=delay))
