"""Exponential backoff with upward jitter.

The jitter only ever lengthens a delay, so the cap is also the shortest wait at steady state: with a cap of
300 s an account that keeps failing costs at most 12 attempts an hour, the same as polling every 300 s.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self, *, base: float, cap: float, factor: float = 2.0, jitter: float = 0.2, rng: random.Random
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base, self.cap, self.factor, self.jitter = base, cap, factor, jitter
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        delay = min(self.cap, self.base * self.factor ** min(self.failures, 64))
        self.failures += 1
        return delay * (1.0 + self._rng.uniform(0.0, self.jitter))

    def reset(self) -> None:
        self.failures = 0
