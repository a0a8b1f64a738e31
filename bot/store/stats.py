"""Counts for the metrics gauges."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import Account, PendingFlow
from bot.store.records import utc_now


@dataclass(frozen=True)
class StoreCounts:
    accounts: int
    pending_flows: int


async def store_counts(session: AsyncSession) -> StoreCounts:
    accounts = (await session.execute(select(func.count()).select_from(Account))).scalar_one()
    flows = (
        await session.execute(
            select(func.count()).select_from(PendingFlow).where(PendingFlow.expires_at > utc_now())
        )
    ).scalar_one()
    return StoreCounts(accounts, flows)
