"""The action journal (see `models.ActionJournalEntry`): one row per Matrix event that asked the bot to
act on the fediverse, pending before the server call and done after. Repositories never commit."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import ActionJournalEntry
from bot.store.records import AccountId, Clock, affected_rows, utc_now

__all__ = ["ActionJournalRepository", "ActionKind", "ActionRecord", "ActionState"]


class ActionKind(enum.StrEnum):
    FAVOURITE = "favourite"
    UNFAVOURITE = "unfavourite"
    REBLOG = "reblog"
    UNREBLOG = "unreblog"
    REPLY = "reply"
    POST = "post"
    AUTHORIZE = "authorize"
    REJECT = "reject"


class ActionState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"


@dataclass(frozen=True)
class ActionRecord:
    event_id: str
    matrix_user_id: str
    account_id: AccountId
    action: ActionKind
    target_id: str | None
    idempotency_key: str
    state: ActionState
    result_id: str | None
    result_url: str | None
    created_at: datetime
    finished_at: datetime | None


def _record(row: ActionJournalEntry) -> ActionRecord:
    return ActionRecord(
        event_id=row.event_id,
        matrix_user_id=row.matrix_user_id,
        account_id=AccountId(row.account_id),
        action=ActionKind(row.action),
        target_id=row.target_id,
        idempotency_key=row.idempotency_key,
        state=ActionState(row.state),
        result_id=row.result_id,
        result_url=row.result_url,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


class ActionJournalRepository:
    def __init__(self, session: AsyncSession, clock: Clock = utc_now) -> None:
        self._session, self._clock = session, clock

    async def get(self, event_id: str) -> ActionRecord | None:
        row = await self._session.get(ActionJournalEntry, event_id)
        return None if row is None else _record(row)

    async def begin(
        self,
        *,
        event_id: str,
        matrix_user_id: str,
        account_id: AccountId,
        action: ActionKind,
        target_id: str | None,
        idempotency_key: str,
    ) -> ActionRecord:
        """The entry for `event_id`: the existing one (pending or done) if there is one, else a new
        pending one. The caller looks at `state` to tell a first run from a replay."""
        row = await self._session.get(ActionJournalEntry, event_id)
        if row is None:
            row = ActionJournalEntry(
                event_id=event_id,
                matrix_user_id=matrix_user_id,
                account_id=int(account_id),
                action=action.value,
                target_id=target_id,
                idempotency_key=idempotency_key,
                state=ActionState.PENDING.value,
                created_at=self._clock(),
            )
            self._session.add(row)
            await self._session.flush()
        return _record(row)

    async def finish(
        self, event_id: str, *, result_id: str | None = None, result_url: str | None = None
    ) -> bool:
        stmt = (
            update(ActionJournalEntry)
            .where(ActionJournalEntry.event_id == event_id)
            .values(
                state=ActionState.DONE.value,
                result_id=result_id,
                result_url=result_url,
                finished_at=self._clock(),
            )
        )
        return affected_rows(await self._session.execute(stmt)) > 0

    async def forget(self, event_id: str) -> bool:
        """Drop a pending entry whose action the server refused for good (it may be asked for again)."""
        stmt = delete(ActionJournalEntry).where(
            ActionJournalEntry.event_id == event_id, ActionJournalEntry.state == ActionState.PENDING.value
        )
        return affected_rows(await self._session.execute(stmt)) > 0

    async def pending(self) -> list[ActionRecord]:
        stmt = (
            select(ActionJournalEntry)
            .where(ActionJournalEntry.state == ActionState.PENDING.value)
            .order_by(ActionJournalEntry.created_at)
        )
        return [_record(row) for row in (await self._session.execute(stmt)).scalars()]

    async def delete_for_account(self, account_id: AccountId) -> int:
        stmt = delete(ActionJournalEntry).where(ActionJournalEntry.account_id == int(account_id))
        return affected_rows(await self._session.execute(stmt))

    async def delete_for_user(self, matrix_user_id: str) -> int:
        stmt = delete(ActionJournalEntry).where(ActionJournalEntry.matrix_user_id == matrix_user_id)
        return affected_rows(await self._session.execute(stmt))

    async def prune(self, older_than: datetime) -> int:
        stmt = delete(ActionJournalEntry).where(ActionJournalEntry.created_at < older_than)
        return affected_rows(await self._session.execute(stmt))

