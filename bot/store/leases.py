"""Relay workers and account leases (`models.RelayWorker`, `models.RelayLease`). Never commits.

PostgreSQL only: claims take rows `FOR UPDATE SKIP LOCKED`, so workers claiming at once never wait for
each other nor claim the same account. A lease is held while `holder` is the worker and `expires_at` is in
the future; every time comes from the caller's clock, so tests move time by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, func, literal, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import Account, AccountState, RelayLease, RelayWorker, UtcDateTime
from bot.store.records import AccountId

__all__ = ["LeaseHolder", "LeasesRepository"]

_NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # an expiry that has always passed


@dataclass(frozen=True)
class LeaseHolder:
    worker: str
    expires_at: datetime


class LeasesRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- workers ----------------------------------------------------------------------------------------

    async def heartbeat(self, worker: str, now: datetime, ttl: timedelta) -> None:
        """Record the worker as alive until now + ttl."""
        stmt = insert(RelayWorker).values(id=worker, started_at=now, expires_at=now + ttl)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"expires_at": now + ttl})
        await self._session.execute(stmt)

    async def register(self, worker: str, now: datetime, ttl: timedelta) -> bool:
        """A worker starting: record it as alive, unless a live worker row has its id (two processes under
        one id would both pass the write guard). False: refused. Atomic: two starting at once, one wins."""
        stmt = (
            insert(RelayWorker)
            .values(id=worker, started_at=now, expires_at=now + ttl)
            .on_conflict_do_update(
                index_elements=["id"],
                set_={"started_at": now, "expires_at": now + ttl},
                where=RelayWorker.expires_at <= now,
            )
            .returning(RelayWorker.id)
        )
        return (await self._session.execute(stmt)).scalar_one_or_none() is not None

    async def live_workers(self, now: datetime) -> int:
        stmt = select(func.count()).select_from(RelayWorker).where(RelayWorker.expires_at > now)
        return int((await self._session.execute(stmt)).scalar_one())

    async def retire(self, worker: str) -> None:
        """A worker stopping cleanly: its leases are free at once and it no longer counts as alive."""
        await self._session.execute(
            update(RelayLease).where(RelayLease.holder == worker).values(holder=None, expires_at=_NEVER)
        )
        await self._session.execute(delete(RelayWorker).where(RelayWorker.id == worker))

    async def prune_workers(self, before: datetime) -> None:
        await self._session.execute(delete(RelayWorker).where(RelayWorker.expires_at < before))

    # -- leases -----------------------------------------------------------------------------------------

    async def active_accounts(self) -> int:
        stmt = select(func.count()).select_from(Account).where(Account.state == AccountState.ACTIVE.value)
        return int((await self._session.execute(stmt)).scalar_one())

    async def renew(self, worker: str, now: datetime, ttl: timedelta) -> list[AccountId]:
        """Extend the worker's unexpired leases on ACTIVE accounts; free its others. Returns what it holds."""
        # Lock the worker's rows first, in account order like `holds_all` (the write guard): the UPDATEs
        # below would lock them in scan order, and two orders can deadlock.
        await self._session.execute(
            select(RelayLease.account_id)
            .where(RelayLease.holder == worker)
            .order_by(RelayLease.account_id)
            .with_for_update()
        )
        active = select(Account.id).where(Account.state == AccountState.ACTIVE.value)
        held = and_(RelayLease.holder == worker, RelayLease.expires_at > now)
        await self._session.execute(
            update(RelayLease)
            .where(RelayLease.holder == worker, or_(~held, RelayLease.account_id.not_in(active)))
            .values(holder=None, expires_at=_NEVER)
        )
        stmt = (
            update(RelayLease)
            .where(held, RelayLease.account_id.in_(active))
            .values(expires_at=now + ttl)
            .returning(RelayLease.account_id)
        )
        return sorted(AccountId(i) for i in (await self._session.execute(stmt)).scalars())

    async def claim(self, worker: str, now: datetime, ttl: timedelta, limit: int) -> list[AccountId]:
        """Take up to `limit` free (or expired) leases on ACTIVE accounts, skipping rows another worker is
        claiming right now. Lease rows come from `add_missing`, in a transaction of its own before."""
        if limit <= 0:
            return []
        free = (
            select(RelayLease.account_id)
            .join(Account, Account.id == RelayLease.account_id)
            .where(Account.state == AccountState.ACTIVE.value)
            .where(or_(RelayLease.holder.is_(None), RelayLease.expires_at <= now))
            .order_by(RelayLease.account_id)
            .limit(limit)
            .with_for_update(of=RelayLease, skip_locked=True)
        )
        stmt = (
            update(RelayLease)
            .where(RelayLease.account_id.in_(free.scalar_subquery()))
            .values(holder=worker, expires_at=now + ttl)
            .returning(RelayLease.account_id)
        )
        return sorted(AccountId(i) for i in (await self._session.execute(stmt)).scalars())

    async def add_missing(self) -> None:
        """Every ACTIVE account gets a (free) lease row the first time a worker looks. Two workers adding
        the same row wait for each other's commit, so keep this transaction short."""
        await self._session.execute(
            insert(RelayLease)
            .from_select(
                ["account_id", "holder", "expires_at"],
                select(Account.id, null(), literal(_NEVER, UtcDateTime()))
                .where(Account.state == AccountState.ACTIVE.value)
                .where(Account.id.not_in(select(RelayLease.account_id))),
            )
            .on_conflict_do_nothing(index_elements=["account_id"])
        )

    async def release(self, worker: str, account_ids: Iterable[AccountId]) -> None:
        ids = list(account_ids)
        if ids:
            await self._session.execute(
                update(RelayLease)
                .where(RelayLease.holder == worker, RelayLease.account_id.in_(ids))
                .values(holder=None, expires_at=_NEVER)
            )

    async def holds_all(self, worker: str, account_ids: Iterable[AccountId], now: datetime) -> bool:
        """Whether the worker holds every one of these leases now (on ACTIVE accounts). The lease rows stay
        locked until the transaction ends, so no other worker can claim them before it commits."""
        ids = sorted(set(account_ids))
        if not ids:
            return True
        stmt = (
            select(RelayLease.account_id)
            .join(Account, Account.id == RelayLease.account_id)
            .where(RelayLease.account_id.in_(ids), RelayLease.holder == worker, RelayLease.expires_at > now)
            .where(Account.state == AccountState.ACTIVE.value)
            .order_by(RelayLease.account_id)  # one lock order for every writer
            .with_for_update(of=RelayLease)
        )
        held = set((await self._session.execute(stmt)).scalars())
        return held == set(ids)

    async def holders(self) -> dict[AccountId, LeaseHolder]:
        """Every held lease (expired ones included: the listing shows their expiry)."""
        stmt = select(RelayLease.account_id, RelayLease.holder, RelayLease.expires_at).where(
            RelayLease.holder.is_not(None)
        )
        return {
            AccountId(account_id): LeaseHolder(holder, expires_at)
            for account_id, holder, expires_at in (await self._session.execute(stmt)).all()
            if holder is not None
        }
