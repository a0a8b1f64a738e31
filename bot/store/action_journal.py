"""The action journal (see `models.ActionJournalEntry`): one row per Matrix event that asked the bot to
act on the fediverse, pending from intake (`receive`) or just before the server call (`begin`), and done
after. A reply's or post's text is kept encrypted until done. Repositories never commit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.keyring import KeyRing, aad_for
from bot.store.models import ActionJournalEntry
from bot.store.records import AccountId, Clock, affected_rows, utc_now

__all__ = [
    "ActionJournalRepository",
    "ActionKind",
    "ActionRecord",
    "ActionState",
    "Intent",
    "action_text_aad",
]


def action_text_aad(event_id: str, matrix_user_id: str) -> bytes:
    return aad_for("action-text", event_id, matrix_user_id)


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
    started: bool = True  # False: written at intake, no server call made yet
    text: str | None = field(default=None, repr=False)  # a reply's or post's text, until done
    visibility: str | None = None  # a post's asked-for visibility (None: the account's default)


@dataclass(frozen=True)
class Intent:
    """What a Matrix event asks for, as written at intake."""

    event_id: str
    matrix_user_id: str
    account_id: AccountId
    action: ActionKind
    target_id: str | None
    idempotency_key: str
    text: str | None = field(default=None, repr=False)
    visibility: str | None = None


def _record(row: ActionJournalEntry, keyring: KeyRing | None) -> ActionRecord:
    text = None
    if row.text_encrypted is not None and keyring is not None:
        text = keyring.decrypt(row.text_encrypted, action_text_aad(row.event_id, row.matrix_user_id))
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
        started=row.started_at is not None,
        text=text,
        visibility=row.visibility,
    )


class ActionJournalRepository:
    def __init__(self, session: AsyncSession, clock: Clock = utc_now, keyring: KeyRing | None = None) -> None:
        """`keyring` reads and writes the text of replies and posts; without it the text reads as None."""
        self._session, self._clock, self._keyring = session, clock, keyring

    async def get(self, event_id: str) -> ActionRecord | None:
        row = await self._session.get(ActionJournalEntry, event_id)
        return None if row is None else _record(row, self._keyring)

    async def receive(self, intent: Intent) -> bool:
        """Write `intent` as pending and not yet started, unless its event has an entry already (a
        replay); True when written."""
        if await self._session.get(ActionJournalEntry, intent.event_id) is not None:
            return False
        self._add(intent, started=False)
        await self._session.flush()
        return True

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
        pending one, started. The caller looks at `state` to tell a first run from a replay."""
        row = await self._session.get(ActionJournalEntry, event_id)
        if row is None:
            intent = Intent(event_id, matrix_user_id, account_id, action, target_id, idempotency_key)
            row = self._add(intent, started=True)
            await self._session.flush()
        return _record(row, self._keyring)

    def _add(self, intent: Intent, *, started: bool) -> ActionJournalEntry:
        """A new pending entry for `intent` (its text sealed), started now or not yet."""
        sealed = None
        if intent.text is not None:
            assert self._keyring is not None, "the text of an action is stored encrypted"
            aad = action_text_aad(intent.event_id, intent.matrix_user_id)
            sealed = self._keyring.encrypt(intent.text, aad)
        now = self._clock()
        row = ActionJournalEntry(
            event_id=intent.event_id,
            matrix_user_id=intent.matrix_user_id,
            account_id=int(intent.account_id),
            action=intent.action.value,
            target_id=intent.target_id,
            idempotency_key=intent.idempotency_key,
            state=ActionState.PENDING.value,
            text_encrypted=sealed,
            visibility=intent.visibility,
            created_at=now,
            started_at=now if started else None,
        )
        self._session.add(row)
        return row

    async def mark_started(self, event_id: str) -> bool:
        """Note that the server is about to be called for an entry written at intake."""
        stmt = (
            update(ActionJournalEntry)
            .where(ActionJournalEntry.event_id == event_id, ActionJournalEntry.started_at.is_(None))
            .values(started_at=self._clock())
        )
        return affected_rows(await self._session.execute(stmt)) > 0

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
                text_encrypted=None,
                finished_at=self._clock(),
            )
        )
        return affected_rows(await self._session.execute(stmt)) > 0

    async def forget(self, event_id: str, *, only_unstarted: bool = False) -> bool:
        """Drop a pending entry whose action the server refused for good (it may be asked for again);
        `only_unstarted`: only one written at intake whose server call was never made (a refused command)."""
        stmt = delete(ActionJournalEntry).where(
            ActionJournalEntry.event_id == event_id, ActionJournalEntry.state == ActionState.PENDING.value
        )
        if only_unstarted:
            stmt = stmt.where(ActionJournalEntry.started_at.is_(None))
        return affected_rows(await self._session.execute(stmt)) > 0

    async def pending(self) -> list[ActionRecord]:
        stmt = (
            select(ActionJournalEntry)
            .where(ActionJournalEntry.state == ActionState.PENDING.value)
            .order_by(ActionJournalEntry.created_at)
        )
        return [_record(row, self._keyring) for row in (await self._session.execute(stmt)).scalars()]

    async def delete_for_account(self, account_id: AccountId) -> int:
        stmt = delete(ActionJournalEntry).where(ActionJournalEntry.account_id == int(account_id))
        return affected_rows(await self._session.execute(stmt))

    async def delete_for_user(self, matrix_user_id: str) -> int:
        stmt = delete(ActionJournalEntry).where(ActionJournalEntry.matrix_user_id == matrix_user_id)
        return affected_rows(await self._session.execute(stmt))

    async def forget_texts(self, older_than: datetime) -> int:
        """Clear the text of pending entries too old to be resumed (their action will not be done)."""
        stmt = (
            update(ActionJournalEntry)
            .where(ActionJournalEntry.created_at < older_than, ActionJournalEntry.text_encrypted.is_not(None))
            .values(text_encrypted=None)
        )
        return affected_rows(await self._session.execute(stmt))

    async def prune(self, older_than: datetime) -> int:
        stmt = delete(ActionJournalEntry).where(ActionJournalEntry.created_at < older_than)
        return affected_rows(await self._session.execute(stmt))

