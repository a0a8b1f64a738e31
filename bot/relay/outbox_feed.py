"""The Matrix process of a split deployment: load the outbox rows relay workers write into delivery.

Woken by the workers' NOTIFY (`wake`), and every `poll_seconds` as a safety net (a lost LISTEN connection,
a missed wake-up). Each scan reads the waiting rows, oldest first, and hands the ones it has not handed
over before to `take`. Ids are never reused, so the set of handed-over ids is trimmed to those still in
the table: a row that is gone was sent (or dropped) and cannot come back. Scans run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.wake_loop import WakeLoop
from bot.store.outbox import OutboxId, OutboxRecord, OutboxRepository

__all__ = ["OutboxFeed"]

log = logging.getLogger(__name__)


class OutboxFeed:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        take: Callable[[list[OutboxRecord]], None],
        *,
        poll_seconds: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sessions = sessions
        self._take = take
        self._handed: set[OutboxId] = set()
        self._loop = WakeLoop(
            self.scan, poll_seconds, failure="reading the relay outbox failed; trying again", sleep=sleep
        )
        self.scans = 0  # completed scans (tests wait on it instead of on time)

    def wake(self) -> None:
        self._loop.wake()

    async def scan(self) -> int:
        """Hand over the new rows; returns how many."""
        async with self._sessions() as session, session.begin():
            rows = await OutboxRepository(session).list_all()
        present = {r.id for r in rows}
        new = [r for r in rows if r.id not in self._handed]
        self._handed = (self._handed & present) | {r.id for r in new}
        if new:
            self._take(new)
        self.scans += 1
        return len(new)

    async def run(self) -> None:
        """A scan now, then every `poll_seconds` or when woken, until cancelled."""
        await self._loop.run()
