"""The database steps of delivery, each one transaction; `UserDelivery` sees only `DeliveryStorage`.

Cursor writes are monotonic: a cursor only ever moves to a newer id (`ids` ordering), read and compared
in the same transaction, so a stale outbox row committed late can never move an account backwards.
The DM room is only read here; `bot.dm_registry` owns that record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.ids import is_newer
from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxRecord, OutboxRepository
from bot.store.records import AccountId
from bot.store.repositories import AccountsRepository, DmRoomsRepository

__all__ = ["DeliveryStorage", "DeliveryStore", "OutboxDraft", "advance_cursors"]


@dataclasses.dataclass(frozen=True)
class OutboxDraft:
    """A message about to be written to the outbox."""

    txn_id: str
    body: str
    html: str


class DeliveryStorage(Protocol):
    """What one user's delivery needs from the database."""

    async def current_room(self) -> str | None: ...

    async def write_batch(
        self, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None: ...

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord: ...

    async def commit(self, record: OutboxRecord) -> None: ...

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None: ...


async def advance_cursors(accounts: AccountsRepository, cursors: Mapping[AccountId, str]) -> None:
    """Move each account's cursor forward to the given id; an older (or equal) id changes nothing."""
    for account_id, cursor in sorted(cursors.items()):
        account = await accounts.get(account_id)
        if account is not None and is_newer(cursor, account.cursor):
            await accounts.set_cursor(account_id, cursor)


class DeliveryStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, matrix_user_id: str
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._user = matrix_user_id

    async def current_room(self) -> str | None:
        async with self._sessions() as session, session.begin():
            return await DmRoomsRepository(session).get(self._user)

    async def write_batch(
        self, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None:
        """Write the drafts to the outbox in one transaction, the cursors riding on the last one (moved at
        once when there is no draft). None, and nothing written, when the user has no DM room."""
        async with self._sessions() as session, session.begin():
            room_id = await DmRoomsRepository(session).get(self._user)
            if room_id is None:
                return None
            if not drafts:
                await advance_cursors(AccountsRepository(session, self._keyring), cursors)
                return []
            outbox = OutboxRepository(session)
            return [
                await outbox.add(
                    matrix_user_id=self._user,
                    room_id=room_id,
                    txn_id=draft.txn_id,
                    body=draft.body,
                    html=draft.html,
                    cursors=cursors if index == len(drafts) - 1 else {},
                )
                for index, draft in enumerate(drafts)
            ]

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord:
        async with self._sessions() as session, session.begin():
            await OutboxRepository(session).set_room(record.id, room_id)
        return dataclasses.replace(record, room_id=room_id)

    async def commit(self, record: OutboxRecord) -> None:
        """The message is done (sent, or given up): commit its cursors and delete it."""
        async with self._sessions() as session, session.begin():
            await advance_cursors(AccountsRepository(session, self._keyring), record.cursors)
            await OutboxRepository(session).delete(record.id)

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None:
        """Take messages that never reached the room back out of the outbox (one transaction); their
        cursors stay where they are, so their notifications are owed until a later message carries them."""
        async with self._sessions() as session, session.begin():
            outbox = OutboxRepository(session)
            for record in records:
                await outbox.delete(record.id)
