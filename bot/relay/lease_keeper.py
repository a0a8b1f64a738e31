"""The account leases of one relay worker (`gts-bot run --role relay`), kept in PostgreSQL.

Every `heartbeat` seconds, or when woken (a NOTIFY that accounts changed), one transaction:
heartbeat the worker row, renew the leases it still holds (those of accounts no longer ACTIVE are freed),
then compare with its fair share, ceil(ACTIVE accounts / live workers): above it, release the excess
(the highest ids, so the spread is stable); below it, claim free or expired leases, `FOR UPDATE SKIP
LOCKED`. After the commit the manager is told: claimed accounts start, lost or released ones stop.

A worker that dies stops renewing: its leases and its worker row expire `ttl` after its last heartbeat,
and the others claim the accounts on their next round, so takeover happens within ttl + heartbeat.
A worker that is merely slow can find a lease gone before it noticed: `write_guard` runs inside each
outbox write and refuses it unless this worker still holds every account it covers (the lease rows stay
locked until that write commits), so two workers never both write the same account's notifications.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.delivery_store import LeaseLost
from bot.relay.wake_loop import WakeLoop
from bot.store.leases import LeasesRepository
from bot.store.pg_notify import OUTBOX_CHANNEL, notify
from bot.store.records import AccountId, utc_now

__all__ = ["LeaseKeeper", "LeaseTiming", "Round", "fair_share"]

log = logging.getLogger(__name__)

AccountCallback = Callable[[AccountId], Awaitable[None]]


@dataclass(frozen=True)
class LeaseTiming:
    ttl: timedelta = timedelta(seconds=20)
    heartbeat: float = 5.0  # seconds between rounds; well under ttl, so a slow round keeps its leases
    forget_workers_after: timedelta = timedelta(hours=1)  # dead worker rows are pruned after this


@dataclass(frozen=True)
class Round:
    """What one round changed."""

    claimed: tuple[AccountId, ...] = ()
    lost: tuple[AccountId, ...] = ()  # expired, freed (account not ACTIVE / deleted), or released


def fair_share(active_accounts: int, live_workers: int) -> int:
    return math.ceil(active_accounts / max(1, live_workers))


class LeaseKeeper:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        worker_id: str,
        *,
        on_claimed: AccountCallback,
        on_lost: AccountCallback,
        timing: LeaseTiming | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.worker_id = worker_id
        self._sessions = sessions
        self._on_claimed = on_claimed
        self._on_lost = on_lost
        self._timing = timing if timing is not None else LeaseTiming()
        self._clock = clock
        self._held: set[AccountId] = set()
        self._loop = WakeLoop(
            self.round,
            self._timing.heartbeat,
            failure="lease round failed; trying again at the next heartbeat",
            sleep=sleep,
        )
        self._round_lock = asyncio.Lock()

    @property
    def ttl(self) -> timedelta:
        return self._timing.ttl

    @property
    def held(self) -> frozenset[AccountId]:
        return frozenset(self._held)

    def wake(self) -> None:
        """Run a round now (accounts were added or changed)."""
        self._loop.wake()

    async def account_changed(self, account_id: AccountId) -> None:
        """The Matrix process changed this account (new token, paused, resumed, types): restart it here if
        this worker holds it; the next round (run now) claims it if it is new, or drops it if it is gone."""
        if account_id in self._held:
            await self._on_claimed(account_id)
        self.wake()

    async def run(self) -> None:
        """A round now, then every heartbeat or when woken, until cancelled."""
        await self._loop.run()

    async def register(self) -> bool:
        """Before the first round: False if a live worker already runs under this id."""
        async with self._sessions() as session, session.begin():
            return await LeasesRepository(session).register(self.worker_id, self._clock(), self._timing.ttl)

    async def round(self) -> Round:
        async with self._round_lock:
            t = self._timing
            async with self._sessions() as session, session.begin():
                await LeasesRepository(session).add_missing()
            async with self._sessions() as session, session.begin():
                leases = LeasesRepository(session)
                now = self._clock()
                await leases.heartbeat(self.worker_id, now, t.ttl)
                held = await leases.renew(self.worker_id, now, t.ttl)
                share = fair_share(await leases.active_accounts(), await leases.live_workers(now))
                claimed: list[AccountId] = []
                if len(held) > share:
                    excess = held[share:]
                    await leases.release(self.worker_id, excess)
                    held = held[:share]
                else:
                    claimed = await leases.claim(self.worker_id, now, t.ttl, share - len(held))
                await leases.prune_workers(now - t.forget_workers_after)
            now_held = set(held) | set(claimed)
            lost = sorted(self._held - now_held)
            # New ones (also leases kept from before a restart under this id), and leases that lapsed and were
            # claimed back in this round: another worker may have written for them meanwhile, so their relay
            # starts again from the stored and waiting cursors instead of its own.
            new = sorted((now_held - self._held) | (set(claimed) & self._held))
            self._held = now_held
        for account_id in lost:
            await self._on_lost(account_id)
        for account_id in new:
            await self._on_claimed(account_id)
        if lost or new:
            log.info(
                "worker %s: claimed %d account(s), gave up %d; holds %d",
                self.worker_id,
                len(new),
                len(lost),
                len(self._held),
            )
        return Round(tuple(new), tuple(lost))

    async def retire(self) -> None:
        """Stopping cleanly: free every lease at once, so others need not wait for them to expire."""
        async with self._round_lock:
            async with self._sessions() as session, session.begin():
                await LeasesRepository(session).retire(self.worker_id)
            self._held.clear()

    async def write_guard(self, session: AsyncSession, account_ids: Collection[AccountId]) -> None:
        """Inside an outbox write: refuse it (LeaseLost) unless this worker holds every account it covers;
        otherwise wake the Matrix process when it commits."""
        if not await LeasesRepository(session).holds_all(self.worker_id, account_ids, self._clock()):
            raise LeaseLost(f"worker {self.worker_id} no longer holds all of {sorted(account_ids)}")
        await notify(session, OUTBOX_CHANNEL)
