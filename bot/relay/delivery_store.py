"""The database steps of delivery, each one transaction; `UserDelivery` sees only `DeliveryStorage`.

Cursor writes are monotonic: a cursor only ever moves to a newer id (`ids` ordering), read and compared
in the same transaction, so a stale outbox row committed late can never move an account backwards.
The DM room is only read here; `bot.dm_registry` owns that record.

A relay worker (`run --role relay`) passes a `write_guard`: it runs first in every transaction that writes
outbox rows or cursors, may refuse it (`LeaseLost`: another worker holds one of the accounts now), and
NOTIFYs the Matrix process, which sends the rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.ids import is_newer
from bot.store.event_map import RelayedEventsRepository, RelayedTarget
from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxRecord, OutboxRepository
from bot.store.records import AccountId
from bot.store.repositories import AccountsRepository, DmRoomsRepository

__all__ = ["DeliveryStorage", "DeliveryStore", "LeaseLost", "OutboxDraft", "WriteGuard", "advance_cursors"]

WriteGuard = Callable[[AsyncSession, Collection[AccountId]], Awaitable[None]]
"""Runs inside an outbox/cursor write for these accounts; raises `LeaseLost` to refuse it."""


class LeaseLost(Exception):
    """This relay worker no longer holds the lease of an account it was about to write for."""


@dataclasses.dataclass(frozen=True)
class OutboxDraft:
    """A message about to be written to the outbox."""

    txn_id: str
    body: str
    html: str
    shows: RelayedTarget | None = None  # the one notification it shows, for the event map


class DeliveryStorage(Protocol):
    """What one user's delivery needs from the database."""

    async def current_room(self) -> str | None: ...

    async def write_batch(
        self, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None: ...

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord: ...

    async def commit(self, record: OutboxRecord, *, sent_as: str | None = None) -> None: ...

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None: ...


async def advance_cursors(accounts: AccountsRepository, cursors: Mapping[AccountId, str]) -> None:
    """Move each account's cursor forward to the given id; an older (or equal) id changes nothing."""
    if not cursors:
        return
    await accounts.lock(cursors.keys())  # a relay worker and the Matrix process may both move one
    for account_id, cursor in sorted(cursors.items()):
        account = await accounts.get(account_id)
        if account is not None and is_newer(cursor, account.cursor):
            await accounts.set_cursor(account_id, cursor)


class DeliveryStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        matrix_user_id: str,
        *,
        write_guard: WriteGuard | None = None,
        on_removed: Callable[[], None] | None = None,
    ) -> None:
        """`on_removed`: called after messages left the outbox (sent, given up or withdrawn)."""
        self._sessions = sessions
        self._write_guard = write_guard
        self._on_removed = on_removed
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
            if self._write_guard is not None:
                await self._write_guard(session, cursors.keys())
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
                    shows=draft.shows,
                )
                for index, draft in enumerate(drafts)
            ]

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord:
        async with self._sessions() as session, session.begin():
            await OutboxRepository(session).set_room(record.id, room_id)
        return dataclasses.replace(record, room_id=room_id)

    async def commit(self, record: OutboxRecord, *, sent_as: str | None = None) -> None:
        """The message is done (sent as event `sent_as`, or given up): commit its cursors, map the event
        to what it shows (one insert, only while that account still exists), and delete it."""
        async with self._sessions() as session, session.begin():
            accounts = AccountsRepository(session, self._keyring)
            await advance_cursors(accounts, record.cursors)
            shows = record.shows
            if sent_as is not None and shows is not None and await accounts.exists(shows.account_id):
                await RelayedEventsRepository(session).add(
                    event_id=sent_as, matrix_user_id=self._user, room_id=record.room_id, target=shows
                )
            await OutboxRepository(session).delete(record.id)
        self._removed()

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None:
        """Take messages that never reached the room back out of the outbox (one transaction); their
        cursors stay where they are, so their notifications are owed until a later message carries them."""
        async with self._sessions() as session, session.begin():
            outbox = OutboxRepository(session)
            for record in records:
                await outbox.delete(record.id)
        self._removed()

    def _removed(self) -> None:
        if self._on_removed is not None:
            self._on_removed()
