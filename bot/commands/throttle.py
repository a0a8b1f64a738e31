"""Per-user budgets, so one user cannot spend what all users share (see README, "Fairness").

- `UserThrottle`: commands a minute per user (a token bucket with bursts up to the same number).
- `InstanceShare`: each user's share of one instance's request budget for the requests the user's own
  commands cause (probe + app registration on `connect`, the code exchange and checks on `code`).
  GoToSocial allows 300 client-API requests per 5 minutes per IP, and every user of that instance
  shares the bot's IP; a user's share is a tenth of it, so one user's loop of connects leaves the rest
  for everyone else and for relaying. It is checked before the client is called; the per-instance
  pacer (bot.fediverse.ratelimit) still paces what is let through.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_FORGET_AFTER_ENTRIES = 10_000

INSTANCE_WINDOW_SECONDS = 300.0
USER_SHARE_OF_INSTANCE = 30
"""Requests per user per instance per 5 minutes for user-triggered calls: 10% of GoToSocial's 300."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets(Generic[K]):
    """One token bucket per key: `capacity` tokens, refilled at `capacity` per `period` seconds.

    Buckets that are full again are forgotten once there are many, so memory stays bounded by the
    keys used within one period.
    """

    def __init__(self, capacity: int, period: float, clock: Callable[[], float]) -> None:
        if capacity < 1 or period <= 0:
            raise ValueError("capacity must be at least 1 and period positive")
        self._capacity = float(capacity)
        self._rate = capacity / period
        self._clock = clock
        self._buckets: dict[K, _Bucket] = {}

    def _refilled(self, key: K, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._capacity, now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        return bucket

    def take(self, key: K, cost: float = 1.0) -> bool:
        """Take `cost` tokens if the bucket has them; False (taking nothing) if not."""
        now = self._clock()
        bucket = self._refilled(key, now)
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        if len(self._buckets) > _FORGET_AFTER_ENTRIES:
            self._forget_full_buckets(now)
        return True

    def seconds_until(self, key: K, cost: float) -> float:
        """How long until `cost` tokens are there (0 when they are now)."""
        bucket = self._refilled(key, self._clock())
        return max(0.0, (min(cost, self._capacity) - bucket.tokens) / self._rate)

    def _forget_full_buckets(self, now: float) -> None:
        full_after = self._capacity / self._rate
        for key, bucket in list(self._buckets.items()):
            if now - bucket.updated >= full_after:
                del self._buckets[key]


class UserThrottle:
    """Allows `per_minute` commands a minute per user, with bursts up to the same number."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._buckets: TokenBuckets[str] = TokenBuckets(per_minute, 60.0, clock)

    def allow(self, user_id: str) -> bool:
        return self._buckets.take(user_id)


class InstanceShare:
    """Each user's share of each instance's request budget (requests per `window` seconds)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        requests: int = USER_SHARE_OF_INSTANCE,
        window: float = INSTANCE_WINDOW_SECONDS,
    ) -> None:
        self._buckets: TokenBuckets[tuple[str, str]] = TokenBuckets(requests, window, clock)

    def spend(self, user_id: str, instance_key: str, requests: int) -> float | None:
        """Take `requests` from the user's share of the instance: None if granted, else seconds to wait."""
        key = (user_id, instance_key)
        if self._buckets.take(key, requests):
            return None
        return max(1.0, self._buckets.seconds_until(key, requests))
