"""A destination that fails every attempt is paused, then probed, instead of being sent its
whole backlog at full width.

Without it, a subscriber answering 503 to everything is sent as many requests as a healthy
one, each a retry scheduled and written: it takes a healthy lane's share of the CPU and of
the database loop, and it burns through every delivery's retry schedule during an outage.
After `TRIP_AFTER` failed attempts in a row the lane starts nothing for a pause, then lets
one attempt through (a probe). A probe's success reopens the lane to its full width; its
failure pauses it again, twice as long, up to `MAX_PAUSE_SECONDS`. Deliveries not tried
while paused keep their place: they use no attempt and are sent once the lane reopens.

The state is each process's own, in memory: each replica learns the destination's health
from its own attempts within one round of them, and a restart starts closed.
"""

from dataclasses import dataclass

# Enough in a row that a flaky subscriber (half its answers errors) is not paused: the
# chance of twenty failures in a row at one in two is under one in a million per attempt.
TRIP_AFTER = 20
FIRST_PAUSE_SECONDS = 1.0
MAX_PAUSE_SECONDS = 60.0
# What `Breaker.record` says when the lane changes: its log line's event, and the change
# the operational events are told of.
LANE_PAUSED = "destination_paused"
LANE_RESUMED = "destination_resumed"


def tripped(failures_in_a_row: int) -> bool:
    """Whether a lane with this many failed attempts in a row is paused (or probing). The
    console reads it from the stored failures since the last success: the breaker itself is
    in the forwarding process's memory."""
    return failures_in_a_row >= TRIP_AFTER


@dataclass(slots=True)
class Breaker:
    failures_in_a_row: int = 0
    # Monotonic time until which the lane starts nothing; None while it is closed.
    paused_until: float | None = None
    pause_seconds: float = FIRST_PAUSE_SECONDS

    def slots(self, width: int, now: float) -> int:
        """How many attempts may be in flight at `now`: the lane's width while closed,
        none while paused, one (the probe) once the pause is over."""
        if self.paused_until is None:
            return width
        return 0 if now < self.paused_until else 1

    def record(self, delivered: bool, now: float) -> str | None:
        """Take an attempt's outcome; when the lane changes, returns the log line's event:
        LANE_PAUSED or LANE_RESUMED."""
        if delivered:
            was_paused = self.paused_until is not None
            self.failures_in_a_row, self.paused_until = 0, None
            self.pause_seconds = FIRST_PAUSE_SECONDS
            return LANE_RESUMED if was_paused else None
        self.failures_in_a_row += 1
        if self.paused_until is None:
            if not tripped(self.failures_in_a_row):
                return None
        elif now < self.paused_until:
            # An attempt started before the pause, ending during it: no news.
            return None
        else:
            self.pause_seconds = min(2 * self.pause_seconds, MAX_PAUSE_SECONDS)
        self.paused_until = now + self.pause_seconds
        return LANE_PAUSED
