"""A destination's delivery rate (`max_per_second`): a token bucket per lane.

Tokens accrue at the rate, up to a burst of a quarter of a second's worth (at least one), and
each attempt started takes one: retries and replays alike, as they are all claimed the same
way. So after an outage a backlog reaches a subscriber sized for its usual trickle at the
rate it was promised, not at the lane's full width; and in any one second it sees at most
1.25 times the rate.

A lane waiting for tokens claims no more deliveries than it has tokens for (see
`forward.forwarder`): it never sleeps on a claim while its lease runs out.

The bucket is this process's: with several forwarders each starts up to the rate, so the
destination sees their sum (the README says how to share it).
"""

from dataclasses import dataclass, field

# Why a quarter: a burst of a whole second's worth, taken just as a second's worth accrues,
# would let a subscriber see twice its rate in one second.
BURST_SECONDS = 0.25
# `max_per_second` is at most this, and at least MIN_PER_SECOND: beyond it a lane's width
# is the limit that matters; below it a token takes over a day.
MAX_PER_SECOND = 100_000.0
MIN_PER_SECOND = 0.00001


@dataclass(slots=True)
class TokenBucket:
    per_second: float
    # Monotonic time of the last refill, and the tokens then; a new bucket holds one token,
    # so a lane's first second after a start sends no burst on top of its rate.
    updated_at: float
    tokens: float = 1.0
    capacity: float = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = max(1.0, self.per_second * BURST_SECONDS)
        self.tokens = min(self.tokens, self.capacity)

    def available(self, now: float) -> int:
        """Whole tokens at `now`: how many attempts may start."""
        self._refill(now)
        return int(self.tokens)

    def take(self, now: float) -> bool:
        """Take a token for an attempt starting at `now`, if there is one."""
        self._refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def wait(self, now: float) -> float:
        """Seconds from `now` until a token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.per_second)

    def _refill(self, now: float) -> None:
        if now > self.updated_at:
            elapsed = now - self.updated_at
            self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
            self.updated_at = now
