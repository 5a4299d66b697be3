"""A destination's lane in the forwarder: its claims waiting to start, its attempts in flight,
its breaker, its rate and whether it is disabled; and how many more it wants to claim.

Pure state, read and changed by the forwarder's one loop and its attempts' callbacks (one
event loop, no locks): the forwarder owns the transactions and the HTTP.
"""

import collections
import time
from dataclasses import dataclass, field

from receiver.destinations import Destination
from receiver.forward.breaker import Breaker
from receiver.forward.rate import TokenBucket
from receiver.store.deliveries import ClaimedDelivery


@dataclass(slots=True)
class Lane:
    """One destination's share of the forwarder."""

    destination: Destination
    # Claimed deliveries not yet started, each with the time after which it must not be.
    claimed: collections.deque[tuple[float, ClaimedDelivery]] = field(
        default_factory=collections.deque
    )
    in_flight: int = 0
    breaker: Breaker = field(default_factory=Breaker)
    # The destination's `max_per_second`, if it has one.
    bucket: TokenBucket | None = None
    # Disabled in the database (a 410 Gone, or an operator): it starts nothing, and what it
    # had claimed is handed back, still pending. It still takes part in claiming
    # transactions, which read the state again: that is how it learns it was enabled.
    disabled: bool = False
    # Whether its last claim took all it asked for: then more is likely due, and a lane
    # waiting for its rate is woken when its next token comes rather than at the next poll.
    more_due: bool = False

    def __post_init__(self) -> None:
        self.bucket = bucket_of(self.destination, time.monotonic())

    def slots(self, now: float) -> int:
        return self.breaker.slots(self.destination.max_in_flight, now)

    def wanted(self, now: float) -> int:
        """How many more to claim: a refill in batches, as one claim per freed slot would
        be a transaction each; none ahead while the lane is paused or probing; and never
        more than its rate lets it start now."""
        slots = self.slots(now)
        if slots < self.destination.max_in_flight:
            room = max(0, slots - self.in_flight - len(self.claimed))
        else:
            room = 2 * slots - self.in_flight - len(self.claimed)
            room = room if room >= max(1, slots // 2) else 0
        if self.bucket is not None:
            room = min(room, self.bucket.available(now) - len(self.claimed))
        return max(0, room)

    def rate_wait(self, now: float) -> float | None:
        """Seconds until a lane held back by its rate may start another attempt (0: it may
        claim now): None when it has nothing claimed and no sign of more due, or has a
        token but no room (what it waits for is a slot: an attempt ending wakes the loop)."""
        if self.bucket is None or self.disabled:
            return None
        if self.claimed and self.in_flight < self.slots(now):
            return self.bucket.wait(now)  # a claim waits for its token
        if not self.more_due:
            # Nothing known to be due (the last claim came back short): the poll, a NOTIFY,
            # a stored event or an attempt ending wakes the loop; claiming again at once
            # spins a transaction a turn while the lane is full.
            return None
        wait = self.bucket.wait(now)
        # A token that came while the loop was writing is claimed for at once: left to the
        # next poll, the bucket fills to its burst and the rest is lost (a backlog of 400
        # drained at 13/s of 20, tests/forward/test_rate_limits.py).
        if wait == 0 and self.wanted(now) == 0:
            return None
        return wait

    def reconfigure(self, destination: Destination, now: float) -> None:
        """Take a reloaded configuration: attempts in flight finish under the old one."""
        if destination.max_per_second != self.destination.max_per_second:
            self.bucket = bucket_of(destination, now)
        self.destination = destination


def bucket_of(destination: Destination, now: float) -> TokenBucket | None:
    if destination.max_per_second is None:
        return None
    return TokenBucket(destination.max_per_second, now)
