"""Sending under the homeserver's rate limit, fair between rooms.

Synapse limits messages per *sender* (the bot), not per room: while it answers 429 M_LIMIT_EXCEEDED for
one send, any other send would get the same answer. So sends still go out one at a time, and a 429 makes
the send wait `retry_after_ms` (5 s when the server gives no hint) and retry the same request — with the
same transaction id, so a request that did reach the server is not duplicated — while the others wait:
that much the homeserver really requires. What is fair is the order: each room (in practice each user's
DM) has its own FIFO queue, and the queues are served round-robin, one send each in turn. One user's
backlog of hundreds of messages then delays another user's reply by at most one send per busy room,
instead of sitting ahead of it. Within a room the order is kept. Observers learn when a block starts
and ends (`RateLimitState`), so the relay can group notifications while blocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
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


class FairSender:
    """Runs sends one at a time; per-key FIFO queues served round-robin; each send retried on 429."""

    def __init__(self, tracker: RateLimitTracker) -> None:
        # Keys in the order they are next served; a key is moved to the back when one of its sends starts.
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._busy = False
        self.tracker = tracker

    @property
    def queued(self) -> int:
        """Sends waiting behind the one in flight."""
        return sum(len(q) for q in self._queues.values())

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` when it is `key`'s turn (sends of the same key keep their order)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(turn)
        self._next()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the turn was given just before the cancel
                self._release()
            else:
                self._forget(key, turn)
            raise
        try:
            return await retry_rate_limited(call, self.tracker, lambda: self.queued)
        finally:
            self._release()

    def _release(self) -> None:
        self._busy = False
        self._next()

    def _forget(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._queues[key]

    def _next(self) -> None:
        """Give the turn to the head of the next key's queue, unless a send is in flight."""
        while not self._busy and self._queues:
            key, queue = next(iter(self._queues.items()))
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            if not turn.done():
                self._busy = True
                turn.set_result(None)
