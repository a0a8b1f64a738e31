"""The database steps of delivery; `UserDelivery` sees only `DeliveryStorage`.

Writing a batch to the outbox and finishing a sent message go through the process's `OutboxWriter`,
which groups them with other users' steps into shared transactions; the rare steps (reading the DM room,
re-targeting, withdrawing after a 429) are transactions of their own here.

Cursor writes are monotonic: a cursor only ever moves to a newer id (`ids` ordering), read and compared
in the same transaction, so a stale outbox row committed late can never move an account backwards.
The DM room is only read here; `bot.dm_registry` owns that record.

A relay worker (`run --role relay`) gives its writer a `write_guard`: it runs first in every transaction
that writes outbox rows or cursors, may refuse it (`LeaseLost`: another worker holds one of the accounts
now), and NOTIFYs the Matrix process, which sends the rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.outbox_writer import OutboxDraft, OutboxWriter
from bot.store.outbox import OutboxRecord, OutboxRepository
from bot.store.records import AccountId
from bot.store.repositories import DmRoomsRepository

__all__ = ["DeliveryStorage", "DeliveryStore", "LeaseLost"]


class LeaseLost(Exception):
    """This relay worker no longer holds the lease of an account it was about to write for."""


class DeliveryStorage(Protocol):
    """What one user's delivery needs from the database."""

    async def current_room(self) -> str | None: ...

    async def write_batch(
        self, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None: ...

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord: ...

    async def commit(self, record: OutboxRecord, *, sent_as: str | None = None) -> None: ...

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None: ...


class DeliveryStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        writer: OutboxWriter,
        matrix_user_id: str,
        *,
        on_removed: Callable[[], None] | None = None,
    ) -> None:
        """`writer`: the process's one `OutboxWriter`. `on_removed`: called after messages left the
        outbox (sent, given up or withdrawn)."""
        self._sessions = sessions
        self._writer = writer
        self._on_removed = on_removed
        self._user = matrix_user_id

    async def current_room(self) -> str | None:
        async with self._sessions() as session, session.begin():
            return await DmRoomsRepository(session).get(self._user)

    async def write_batch(
        self, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None:
        """Write the drafts to the outbox in one transaction, the cursors riding on the last one (moved at
        once when there is no draft). None, and nothing written, when the user has no DM room."""
        return await self._writer.write(self._user, drafts, cursors)

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord:
        async with self._sessions() as session, session.begin():
            await OutboxRepository(session).set_room(record.id, room_id)
        return dataclasses.replace(record, room_id=room_id)

    async def commit(self, record: OutboxRecord, *, sent_as: str | None = None) -> None:
        """The message is done (sent as event `sent_as`, or given up): commit its cursors, map the event
        to what it shows (only while that account still exists), and delete it."""
        await self._writer.finish(record, sent_as)
        self._removed()

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None:
        """Take messages that never reached the room back out of the outbox (one transaction); their
        cursors stay where they are, so their notifications are owed until a later message carries them."""
        async with self._sessions() as session, session.begin():
            await OutboxRepository(session).delete_many([record.id for record in records])
        self._removed()

    def _removed(self) -> None:
        if self._on_removed is not None:
            self._on_removed()
