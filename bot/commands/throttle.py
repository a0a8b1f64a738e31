"""Per-user command budget: a token bucket, so one user cannot flood instances through the bot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class UserThrottle:
    """Allows `per_minute` commands a minute per user, with bursts up to the same number."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, user_id: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = _Bucket(self._capacity, now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        if len(self._buckets) > 10_000:
            self._forget_full_buckets(now)
        return True

    def _forget_full_buckets(self, now: float) -> None:
        full_after = self._capacity / self._rate
        for user, bucket in list(self._buckets.items()):
            if now - bucket.updated >= full_after:
                del self._buckets[user]
