"""The one recording fake of the bot's Matrix side (the adapter's seam), for tests and benchmarks.

It records what the bot sends, joins, leaves and redacts, and behaves like a homeserver where it matters:
a transaction id seen before is dropped (as Synapse does), so `events` is what the room shows while
`attempts` is every call. Knobs make the faults a test needs: `fail` (sends raise), `refuse(room, body)`
(the homeserver's error for one send, e.g. MatrixForbidden for a room the bot was kicked from), `gate`
(sends wait until it is set), `pace` (awaited before each send: a homeserver's rate limit), and
`hang_after_record` (the event is stored and the call never returns: the process "dies" before it learns
the send worked).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.matrix.types import EventId, RoomId

__all__ = ["RecordingMatrix", "SendFailed", "Sent"]


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
