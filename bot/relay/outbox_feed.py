"""The Matrix process of a split deployment: load the outbox rows relay workers write into delivery.

Woken by the workers' NOTIFY (`wake`), when messages it handed over are done (`rows_gone`, only while it
holds some back), and every `poll_seconds` as a safety net (a lost LISTEN connection, a missed wake-up).
Each scan reads the ids of the waiting rows (no bodies), oldest first, and hands over the ones it has not
handed over before, at most `per_user` of each user's at a time: the rest wait in the table, not in
memory, until their user's earlier ones are gone. Ids are never reused, so the set of handed-over ids is
trimmed to those still in the table: a row that is gone was sent (or dropped) and cannot come back. Ids are
not committed in order (two workers' transactions), so a scan looks at every waiting id, not only at ids
above the highest it has seen. Scans run one at a time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.wake_loop import WakeLoop
from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxId, OutboxRecord, OutboxRepository

__all__ = ["OutboxFeed"]

PER_USER = 100  # messages of one user in memory at a time; a user's delivery sends them in order anyway


class OutboxFeed:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        take: Callable[[list[OutboxRecord]], None],
        *,
        per_user: int = PER_USER,
        poll_seconds: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._take = take
        self._per_user = per_user
        self._handed: set[OutboxId] = set()
        self._holding_back = False
        self._loop = WakeLoop(
            self.scan, poll_seconds, failure="reading the relay outbox failed; trying again", sleep=sleep
        )
        self.scans = 0  # completed scans (tests wait on it instead of on time)

    def wake(self) -> None:
        self._loop.wake()

    def rows_gone(self) -> None:
        """Messages it handed over were sent or dropped: scan again if rows wait for room."""
        if self._holding_back:
            self._loop.wake()

    async def scan(self) -> int:
        """Hand over the new rows, up to `per_user` per user in hand at once; returns how many."""
        async with self._sessions() as session, session.begin():
            outbox = OutboxRepository(session, self._keyring)
            waiting = await outbox.waiting_ids()
            self._handed &= {outbox_id for outbox_id, _ in waiting}
            in_hand = Counter(user for outbox_id, user in waiting if outbox_id in self._handed)
            chosen: list[OutboxId] = []
            for outbox_id, user in waiting:
                if outbox_id not in self._handed and in_hand[user] < self._per_user:
                    chosen.append(outbox_id)
                    in_hand[user] += 1
            self._holding_back = len(self._handed) + len(chosen) < len(waiting)
            new = await outbox.get_many(chosen) if chosen else []
        self._handed |= {r.id for r in new}
        if new:
            self._take(new)
        self.scans += 1
        return len(new)

    async def run(self) -> None:
        """A scan now, then every `poll_seconds` or when woken, until cancelled."""
        await self._loop.run()
