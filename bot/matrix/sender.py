"""Sending under the homeserver's rate limit: commands first, rooms in turn, each 429 honoured exactly.

Synapse limits messages per *sender* (the bot), not per room, with a leaky bucket (`rc_message`: a burst
of 10, then one message every 1/0.2 = 5 s). While it refuses one send, it would refuse any other, and it
says for how long: `retry_after_ms`. So:

- Sends go out one at a time and nothing spaces them while the homeserver accepts: the burst is used as
  it is there.
- A 429 blocks every send until exactly `retry_after_ms` later (exponential backoff only when the server
  gave no hint). The next send then goes at that moment, not after a margin.
- The next send is chosen when it may go, by priority: a command reply (`Priority.COMMAND`) takes the
  next slot the limiter allows, relayed notifications (`Priority.RELAY`) the ones after. Within a
  priority each key (a room, or a user's delivery) has its own FIFO queue and the keys are served
  round-robin, so one user's backlog never sits ahead of another user's reply.
- A command send is retried after a 429 (same transaction id, first in its room's queue). A relay send
  is not: the 429 goes back to the relay (`MatrixRateLimited`), whose next send composes its message
  when its turn comes (`send_relay`'s `compose`), folding in everything that arrived meanwhile.

Observers learn when a block starts and ends (`RateLimitState`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import TypeVar

from bot.matrix.errors import MatrixRateLimited
from bot.matrix.types import RateLimitState

__all__ = [
    "FairSender",
    "Priority",
    "RateLimitObserver",
    "RateLimitTracker",
    "retry_delay",
    "retry_rate_limited",
    "unhinted_delay",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_MS = 5000
MAX_RETRY_MS = 300_000
MIN_RETRY_MS = 20  # a hint of 0 (Synapse truncates to whole ms) must not become a tight request loop
UNHINTED_CAP_MS = 60_000

RateLimitObserver = Callable[[RateLimitState], None]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Priority(IntEnum):
    """Who goes first when the limiter allows the next send (lower first)."""

    COMMAND = 0  # command replies and anything else said to a person in answer
    RELAY = 1  # relayed notifications


def retry_delay(retry_after_ms: int | None) -> float:
    """Seconds to wait after a 429: the server's hint (bounded), else 5 s.

    Synapse truncates the hint to whole milliseconds, so its limiter allows the send up to 1 ms later
    than it says: waiting hint + 1 ms is the earliest moment that is certainly allowed.
    """
    if retry_after_ms is None or retry_after_ms < 0:
        return DEFAULT_RETRY_MS / 1000
    return min(max(retry_after_ms + 1, MIN_RETRY_MS), MAX_RETRY_MS) / 1000


def unhinted_delay(refusals: int) -> float:
    """Seconds to wait after the `refusals`-th 429 in a row that came without `retry_after_ms`."""
    doubled: int = DEFAULT_RETRY_MS * 2 ** max(0, refusals - 1)
    return min(doubled, UNHINTED_CAP_MS) / 1000


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
    """Run `call` until it does not raise MatrixRateLimited, sleeping as the server asks in between.

    For requests outside the message limiter's queue (joins, room creation, redactions, key requests).
    """
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
    """Runs sends one at a time, in priority order, per-key FIFO queues served round-robin (see above)."""

    def __init__(
        self, tracker: RateLimitTracker, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        # Per priority, the keys in the order they are next served; a key moves to the back when one of
        # its sends starts.
        self._queues: dict[Priority, OrderedDict[str, deque[asyncio.Future[None]]]] = {
            p: OrderedDict() for p in Priority
        }
        self._busy = False
        self._not_before = float("-inf")  # clock time until which the homeserver refuses every send
        self._unhinted = 0  # 429s in a row without retry_after_ms
        self._waker: asyncio.Task[None] | None = None
        self._clock = clock
        self._sleep = sleep
        self.tracker = tracker

    @property
    def queued(self) -> int:
        """Sends waiting (behind the one in flight, or for the limiter)."""
        return sum(len(q) for queues in self._queues.values() for q in queues.values())

    @property
    def blocked_for(self) -> float:
        """Seconds until the homeserver accepts sends again (0 when it does now, as far as we know)."""
        return max(0.0, self._not_before - self._clock())

    async def run(
        self,
        key: str,
        call: Callable[[], Awaitable[T]],
        *,
        priority: Priority = Priority.COMMAND,
        retry: bool = True,
    ) -> T:
        """Run `call` when it is `key`'s turn (sends of the same key and priority keep their order).

        On 429 the sender is blocked for the time the server asks; with `retry` the call then runs again
        (first in its queue), without it the MatrixRateLimited is raised to the caller.
        """
        first = False
        while True:
            await self._turn(key, priority, first=first)
            try:
                result = await call()
            except MatrixRateLimited as e:
                self._busy = False
                self._refused(e.retry_after_ms)
                if not retry:
                    raise
                first = True
                continue
            except BaseException:
                self._release()
                raise
            self._unhinted = 0
            self.tracker.clear(self.queued)
            self._release()
            return result

    def _release(self) -> None:
        self._busy = False
        self._next()

    async def _turn(self, key: str, priority: Priority, *, first: bool) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queues = self._queues[priority]
        queue = queues.setdefault(key, deque())
        if first:
            queue.appendleft(turn)
            queues.move_to_end(key, last=False)
        else:
            queue.append(turn)
        self._next()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the turn was given just before the cancel
                self._release()
            else:
                self._forget(queues, key, turn)
            raise

    def _refused(self, retry_after_ms: int | None) -> None:
        if retry_after_ms is None:
            self._unhinted += 1
            delay = unhinted_delay(self._unhinted)
        else:
            delay = retry_delay(retry_after_ms)
        self._not_before = max(self._not_before, self._clock() + delay)
        self.tracker.hit(retry_after_ms, self.queued)
        log.warning("homeserver rate limit: next send in %.2f s (%d queued)", delay, self.queued)
        self._next()

    @staticmethod
    def _forget(
        queues: OrderedDict[str, deque[asyncio.Future[None]]], key: str, turn: asyncio.Future[None]
    ) -> None:
        queue = queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del queues[key]

    def _next(self) -> None:
        """Give the turn to the next waiting send, unless one is in flight or the limiter says not yet."""
        if self._busy:
            return
        if self._not_before > self._clock():
            if self._waker is None and self.queued:
                self._waker = asyncio.ensure_future(self._wake_when_allowed())
            return
        for queues in self._queues.values():  # in priority order
            while queues:
                key, queue = next(iter(queues.items()))
                turn = queue.popleft()
                if queue:
                    queues.move_to_end(key)
                else:
                    del queues[key]
                if not turn.done():
                    self._busy = True
                    turn.set_result(None)
                    return

    async def _wake_when_allowed(self) -> None:
        # The wait is measured when the sleep starts (and again after it: a later 429 may have moved it).
        try:
            while (wait := self._not_before - self._clock()) > 0:
                await self._sleep(wait)
        finally:
            self._waker = None
        self._next()
