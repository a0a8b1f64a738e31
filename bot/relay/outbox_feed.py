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
        self._poll = poll_seconds
        self._sleep = sleep
        self._handed: set[OutboxId] = set()
        self._wake = asyncio.Event()
        self.scans = 0  # completed scans (tests wait on it instead of on time)

    def wake(self) -> None:
        self._wake.set()

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
        while True:
            self._wake.clear()
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the relay outbox failed; trying again")
            await self._nap()

    async def _nap(self) -> None:
        nap = asyncio.ensure_future(self._sleep(self._poll))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({nap, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            woken.cancel()
