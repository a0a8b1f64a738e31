"""Ordered sending under the homeserver's rate limit.

Every send goes through one FIFO lock, so messages leave in the order they were queued. When the server
answers 429 M_LIMIT_EXCEEDED, the sender waits `retry_after_ms` (5 s when the server gives no hint) and
retries the same request — with the same transaction id, so a request that did reach the server is not
duplicated — while everything queued behind it waits. Observers learn when the block starts and ends
(`RateLimitState`), so the relay can group notifications while blocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.matrix.errors import MatrixRateLimited
from bot.matrix.types import RateLimitState

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_MS = 5000
MAX_RETRY_MS = 300_000

RateLimitObserver = Callable[[RateLimitState], None]


def retry_delay(retry_after_ms: int | None) -> float:
    """Seconds to wait after a 429: the server's hint (bounded), else 5 s."""
    if retry_after_ms is None or retry_after_ms <= 0:
        return DEFAULT_RETRY_MS / 1000
    return min(retry_after_ms, MAX_RETRY_MS) / 1000 + 0.05


class RateLimitTracker:
    """Counts 429s and publishes the blocked/unblocked state to observers."""

    def __init__(self) -> None:
        self.hits = 0
        self.blocked = False
        self.retry_after_ms: int | None = None
        self._observers: list[RateLimitObserver] = []

    def subscribe(self, observer: RateLimitObserver) -> None:
        self._observers.append(observer)

    def hit(self, retry_after_ms: int | None, queued: int) -> None:
        self.hits += 1
        self.retry_after_ms = retry_after_ms
        self.blocked = True
        self._publish(RateLimitState(True, retry_after_ms, queued))

    def clear(self, queued: int) -> None:
        if self.blocked:
            self.blocked = False
            self.retry_after_ms = None
            self._publish(RateLimitState(False, None, queued))

    def _publish(self, state: RateLimitState) -> None:
        for observer in self._observers:
            try:
                observer(state)
            except Exception:
                log.exception("rate limit observer failed")


async def retry_rate_limited(
    call: Callable[[], Awaitable[T]], tracker: RateLimitTracker, queued: Callable[[], int] = lambda: 0
) -> T:
    """Run `call` until it does not raise MatrixRateLimited, sleeping as the server asks in between."""
    while True:
        try:
            result = await call()
        except MatrixRateLimited as e:
            tracker.hit(e.retry_after_ms, queued())
            delay = retry_delay(e.retry_after_ms)
            log.warning("homeserver rate limit: retrying in %.1f s (%d queued)", delay, queued())
            await asyncio.sleep(delay)
            continue
        tracker.clear(queued())
        return result


class OrderedSender:
    """Runs sends one at a time in arrival order, retrying each on 429 before the next may start."""

    def __init__(self, tracker: RateLimitTracker) -> None:
        self._lock = asyncio.Lock()  # asyncio.Lock wakes waiters first-in, first-out
        self._waiting = 0
        self.tracker = tracker

    @property
    def queued(self) -> int:
        """Sends waiting behind the one in flight."""
        return self._waiting

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            return await retry_rate_limited(call, self.tracker, lambda: self._waiting)
        finally:
            self._lock.release()
