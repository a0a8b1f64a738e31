"""The best latency any sender can reach under Synapse's message limiter, folding what waits.

Synapse's `rc_message` is a leaky bucket per sender (synapse/api/ratelimiting.py, modelled exactly by
`tests.fakes.matrix.SynapseLimiter`): up to `burst` messages at once, then the bucket drains at `rate`
per second, so once it is full one message is allowed every 1/rate seconds (5 s by default).

The bound comes from the sender that does the best possible thing: it sends a message the moment a
notification arrives if the bucket allows, otherwise at the first moment it allows, and every message
carries *everything* that has arrived by then (assuming it all fits in one message). Nothing does better:
the earliest moment the bucket allows a k-th message only moves later when any earlier message moves
later, and this sender sends each message as early as anything can (when the first notification it
carries arrives, or when the bucket allows); by induction its k-th message leaves no later than any other
sender's k-th, and every notification goes out in the first message after it arrives. Its latencies
(send time minus arrival, transit ignored) are the bound; its p90 is the figure to compare with.

Example, Synapse's defaults (0.2/s, burst 10), 30 notifications one a second from an empty bucket:
t = 0…11 go at once (the bucket drains 0.2 a second meanwhile, so 12 fit), then messages at t = 15, 20,
25 and 30 carry 4, 5, 5 and 4 notifications: 16 messages, the longest wait 4 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tests.fakes.matrix import SynapseLimiter

__all__ = ["Bound", "folding_bound"]


@dataclass(frozen=True)
class Bound:
    latencies: tuple[float, ...]  # per notification, in arrival order
    sends: tuple[float, ...]  # when each message goes

    @property
    def messages(self) -> int:
        return len(self.sends)


def folding_bound(arrivals: Sequence[float], *, rate: float = 0.2, burst: int = 10) -> Bound:
    """Latencies of the best folding sender for notifications arriving at `arrivals` (sorted, seconds),
    starting from an empty bucket."""
    limiter = SynapseLimiter(clock=lambda: 0.0, rate=rate, burst=burst)
    latencies: list[float] = []
    sends: list[float] = []
    i = 0
    while i < len(arrivals):
        at = limiter.allowed_at(arrivals[i])
        limiter.record(at)
        sends.append(at)
        while i < len(arrivals) and arrivals[i] <= at:
            latencies.append(at - arrivals[i])
            i += 1
    return Bound(tuple(latencies), tuple(sends))
