"""Per-instance request pacing, so normal operation never meets a 429.

GoToSocial counts every client-API request from one IP in a fixed 5-minute window (default 300) and sends
`X-Ratelimit-Limit/-Remaining/-Reset` (reset = ISO time of the window's end) on each response. Its 429 for
the rate limit has no Retry-After; its throttling 429 has `Retry-After: 30`. All users of the bot on one
instance share the bot's IP, hence one `InstancePacer` per instance, shared by everyone.

The pacer lets requests through freely while more than half the window's allowance remains, then spreads
the rest evenly over the time left, keeping a reserve; at the reserve it waits for the window to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

__all__ = ["Clock", "InstancePacer", "PacerPolicy", "PacerRegistry", "Sleep"]

Clock = Callable[[], float]  # wall-clock seconds since the epoch (reset times are wall-clock)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class PacerPolicy:
    reserve_fraction: float = 0.05  # of the limit, kept back for interactive requests
    min_reserve: int = 2
    pace_below_fraction: float = 0.5  # start spreading requests when remaining falls below this share
    max_wait: float = 330.0  # never sleep longer than this for one request; longer → RateLimitedError
    max_retries: int = 2  # retries after a 429
    default_retry_after: float = 30.0  # a 429 that says nothing about when to come back
    reset_margin: float = 1.0  # GoToSocial truncates the reset time to whole seconds


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip()
    return None


def _parse_int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


def _parse_reset(text: str | None, now: float) -> float | None:
    """X-RateLimit-Reset as epoch time: ISO 8601 (GoToSocial, Mastodon), epoch, or seconds from now."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if number > 1e9 else now + max(number, 0.0)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _parse_retry_after(text: str | None, now: float) -> float | None:
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        return parsedate_to_datetime(text).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return None


class InstancePacer:
    """Paces the requests to one instance. Safe to share between tasks."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        policy: PacerPolicy | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.policy = policy if policy is not None else PacerPolicy()
        self._lock = asyncio.Lock()
        self._limit: int | None = None
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._blocked_until = 0.0
        self._last_slot = 0.0

    @property
    def remaining(self) -> int | None:
        """The requests believed left in the current window (None when unknown)."""
        return self._remaining

    def delay_for_next(self) -> float:
        """How long the next request would wait now (for tests and metrics); reserves nothing."""
        return max(0.0, self._next_slot(self._clock()) - self._clock())

    def _reserve(self) -> int:
        if self._limit is None:
            return self.policy.min_reserve
        return max(self.policy.min_reserve, int(self._limit * self.policy.reserve_fraction))

    def _next_slot(self, now: float) -> float:
        if self._blocked_until > now:
            return self._blocked_until
        if self._remaining is None or self._reset_at is None:
            return now
        window_end = self._reset_at + self.policy.reset_margin
        if window_end <= now:  # the window has ended; the next response tells us about the new one
            return now
        usable = self._remaining - self._reserve()
        if usable <= 0:
            return window_end
        if self._limit is not None and self._remaining >= self._limit * self.policy.pace_below_fraction:
            return now
        interval = (window_end - now) / usable
        return max(now, self._last_slot + interval)

    async def acquire(self) -> None:
        """Wait until a request to this instance may be sent."""
        async with self._lock:
            now = self._clock()
            window_end = None if self._reset_at is None else self._reset_at + self.policy.reset_margin
            if window_end is not None and window_end <= now and self._blocked_until <= now:
                self._remaining = None
                self._reset_at = None
            slot = self._next_slot(now)
            self._last_slot = slot
            if self._remaining is not None:
                self._remaining = max(0, self._remaining - 1)  # corrected by the response's headers
        delay = min(slot - now, self.policy.max_wait)
        if delay > 0:
            await self._sleep(delay)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the instance's limit from a response's headers."""
        now = self._clock()
        limit = _parse_int(_header(headers, "x-ratelimit-limit"))
        remaining = _parse_int(_header(headers, "x-ratelimit-remaining"))
        reset_at = _parse_reset(_header(headers, "x-ratelimit-reset"), now)
        if limit is not None:
            self._limit = limit
        if remaining is None:
            return
        same_window = reset_at is None or (
            self._reset_at is not None and abs(reset_at - self._reset_at) < 1.0
        )
        if same_window and self._remaining is not None:
            # Responses can arrive out of order: within one window the lowest count is the truest.
            self._remaining = min(self._remaining, remaining)
        else:
            self._remaining = remaining
        if reset_at is not None:
            self._reset_at = reset_at

    def rate_limited(self, headers: Mapping[str, str]) -> float:
        """Record a 429 and return how many seconds to wait before trying again."""
        self.observe(headers)
        now = self._clock()
        delay = _parse_retry_after(_header(headers, "retry-after"), now)
        if delay is None:
            reset_at = _parse_reset(_header(headers, "x-ratelimit-reset"), now)
            delay = reset_at - now + self.policy.reset_margin if reset_at is not None else None
        if delay is None:
            delay = self.policy.default_retry_after
        delay = max(delay, 1.0)
        self._blocked_until = max(self._blocked_until, now + delay)
        return delay


class PacerRegistry:
    """One pacer per instance key, created on first use."""

    def __init__(
        self, *, clock: Clock = time.time, sleep: Sleep = asyncio.sleep, policy: PacerPolicy | None = None
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._policy = policy if policy is not None else PacerPolicy()
        self._pacers: dict[str, InstancePacer] = {}

    def get(self, instance_key: str) -> InstancePacer:
        pacer = self._pacers.get(instance_key)
        if pacer is None:
            pacer = InstancePacer(clock=self._clock, sleep=self._sleep, policy=self._policy)
            self._pacers[instance_key] = pacer
        return pacer
