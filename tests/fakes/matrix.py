"""The one recording fake of the bot's Matrix side (the adapter's seam), for tests and benchmarks.

It records what the bot sends, joins, leaves and redacts, and behaves like a homeserver where it matters:
a transaction id seen before is dropped (as Synapse does), so `events` is what the room shows while
`attempts` is every call. Knobs make the faults a test needs: `fail` (sends raise), `refuse(room, body)`
(the homeserver's error for one send, e.g. MatrixForbidden for a room the bot was kicked from), `gate`
(sends wait until it is set), `pace` (awaited before each send: a homeserver's rate limit), and
`hang_after_record` (the event is stored and the call never returns: the process "dies" before it learns
the send worked).

`LimitedMatrix` is the same fake behind the adapter's real `FairSender` and Synapse's message limiter
(`SynapseLimiter`, the leaky bucket of synapse/api/ratelimiting.py), both on a `VirtualTime` clock that
only moves when a test says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.matrix.errors import MatrixRateLimited
from bot.matrix.sender import FairSender, Priority, RateLimitTracker
from bot.matrix.types import EventId, OutgoingNotice, RoomId

__all__ = ["LimitedMatrix", "RecordingMatrix", "SendFailed", "Sent", "SynapseLimiter", "VirtualTime"]


class SendFailed(Exception):
    """What a send raises while `fail` is set: the homeserver is unavailable."""


@dataclass(frozen=True)
class Sent:
    room_id: str
    body: str
    html: str
    txn_id: str | None
    at: float = field(default_factory=time.time, compare=False)  # wall clock, when it was recorded


@dataclass
class RecordingMatrix:
    events: list[Sent] = field(default_factory=list)
    attempts: list[Sent] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    redactions: list[tuple[str, str, str | None]] = field(default_factory=list)
    fail: bool = False
    rate_limited: bool = False
    may_redact: bool = False
    gate: asyncio.Event | None = None
    pace: Callable[[], Awaitable[None]] | None = None
    hang_after_record: bool = False
    refuse: Callable[[str, str], Exception | None] | None = None
    _seen: set[str] = field(default_factory=set)

    async def send_notice(
        self, room_id: RoomId, body: str, html: str, *, txn_id: str | None = None
    ) -> EventId:
        sent = Sent(room_id, body, html, txn_id)
        self.attempts.append(sent)
        if self.gate is not None:
            await self.gate.wait()
        if self.pace is not None:
            await self.pace()
        if self.fail:
            raise SendFailed("homeserver unavailable")
        refused = None if self.refuse is None else self.refuse(room_id, body)
        if refused is not None:
            raise refused
        if txn_id is None or txn_id not in self._seen:
            self.events.append(Sent(room_id, body, html, txn_id))
            if txn_id is not None:
                self._seen.add(txn_id)
        if self.hang_after_record:
            await asyncio.Event().wait()
        return EventId(f"$event{len(self.events)}")

    async def send_relay(
        self, key: str, compose: Callable[[], Awaitable[OutgoingNotice | None]]
    ) -> EventId | None:
        notice = await compose()
        if notice is None:
            return None
        return await self.send_notice(notice.room_id, notice.body, notice.html, txn_id=notice.txn_id)

    async def join(self, room_id: RoomId) -> RoomId:
        self.joined.append(room_id)
        return room_id

    async def leave(self, room_id: RoomId) -> None:
        self.left.append(room_id)

    async def can_redact(self, room_id: RoomId) -> bool:
        return self.may_redact

    async def redact(self, room_id: RoomId, event_id: EventId, reason: str | None = None) -> bool:
        self.redactions.append((room_id, event_id, reason))
        return self.may_redact

    def bodies(self) -> list[str]:
        return [e.body for e in self.events]

    def messages(self) -> list[tuple[str, str]]:
        """(room, body) of every message the room shows, oldest first."""
        return [(e.room_id, e.body) for e in self.events]


class VirtualTime:
    """A clock that stands still until `advance`; `sleep` waits until the clock reaches its deadline."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, waiter))
        try:
            await waiter
        finally:
            self._sleepers = [(t, w) for t, w in self._sleepers if w is not waiter]

    @property
    def next_wake(self) -> float | None:
        """The earliest deadline anyone sleeps until (None: nobody sleeps)."""
        return min((t for t, _ in self._sleepers), default=None)

    def advance(self, to: float) -> None:
        """Move the clock to `to` and wake every sleeper whose deadline has come."""
        self.now = max(self.now, to)
        for deadline, waiter in self._sleepers:
            if deadline <= self.now and not waiter.done():
                waiter.set_result(None)


@dataclass
class SynapseLimiter:
    """Synapse's `Ratelimiter.can_do_action` for one sender: a leaky bucket of `burst` actions that
    drains at `rate` per second. A refused action is not counted; `retry_after_ms` is truncated to whole
    milliseconds, as Synapse does."""

    clock: Callable[[], float]
    rate: float = 0.2
    burst: int = 10
    _count: float = 0.0
    _start: float = 0.0

    def allowed_at(self, now: float) -> float:
        """The earliest time at or after `now` when one more action is allowed."""
        if self._count - (now - self._start) * self.rate <= self.burst - 1:
            return now
        return self._start + (self._count - self.burst + 1) / self.rate

    def record(self, now: float) -> None:
        """Count one action at `now` (Synapse keeps the raw count and its start; a drained bucket
        restarts)."""
        if self._count - (now - self._start) * self.rate < 0:
            self._count, self._start = 0.0, now
        self._count += 1

    def take(self) -> None:
        """Count one message, or raise MatrixRateLimited as Synapse's 429 would."""
        now = self.clock()
        allowed_at = self.allowed_at(now)
        if allowed_at > now:
            raise MatrixRateLimited("Too Many Requests", retry_after_ms=int(1000 * (allowed_at - now)))
        self.record(now)


class LimitedMatrix(RecordingMatrix):
    """The recording fake behind the adapter's real FairSender and Synapse's limiter, on virtual time:
    command sends (`send_notice`) and relay sends (`send_relay`) take turns exactly as in the adapter."""

    def __init__(self, time_: VirtualTime, *, rate: float = 0.2, burst: int = 10) -> None:
        super().__init__()
        self.time = time_
        self.limiter = SynapseLimiter(time_.clock, rate, burst)
        self.sender = FairSender(RateLimitTracker(), clock=time_.clock, sleep=time_.sleep)
        self.accepted_at: list[float] = []  # virtual time of each accepted send, in order

    @property
    def rate_limited(self) -> bool:
        return self.sender.tracker.blocked

    @rate_limited.setter
    def rate_limited(self, value: bool) -> None:
        """The dataclass base assigns a default; the limiter decides here."""

    async def _deliver(self, room_id: RoomId, body: str, html: str, txn_id: str | None) -> EventId:
        self.limiter.take()
        self.accepted_at.append(self.time.now)
        return await RecordingMatrix.send_notice(self, room_id, body, html, txn_id=txn_id)

    async def send_notice(
        self, room_id: RoomId, body: str, html: str, *, txn_id: str | None = None
    ) -> EventId:
        return await self.sender.run(room_id, lambda: self._deliver(room_id, body, html, txn_id))

    async def send_relay(
        self, key: str, compose: Callable[[], Awaitable[OutgoingNotice | None]]
    ) -> EventId | None:
        async def once() -> EventId | None:
            notice = await compose()
            if notice is None:
                return None
            return await self._deliver(notice.room_id, notice.body, notice.html, notice.txn_id)

        return await self.sender.run(key, once, priority=Priority.RELAY, retry=False)
