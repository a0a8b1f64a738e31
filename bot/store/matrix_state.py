"""Repositories for the bot's own Matrix state: its login, its DM rooms, the command events it handled.

Like every repository they never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.encrypted_columns import matrix_token_aad
from bot.store.keyring import KeyRing
from bot.store.models import DmRoom, HandledEvent, MatrixSession
from bot.store.records import Clock, MatrixSessionRecord, utc_now

__all__ = ["DmRoomsRepository", "HandledEventsRepository", "MatrixSessionRepository"]


class DmRoomsRepository:
    """The DM room the bot uses with each Matrix user."""

    def __init__(self, session: AsyncSession, clock: Clock = utc_now) -> None:
        self._session, self._clock = session, clock

    async def get(self, matrix_user_id: str) -> str | None:
        stmt = select(DmRoom.room_id).where(DmRoom.matrix_user_id == matrix_user_id)
        return (await self._session.execute(stmt)).scalar_one_or_none()

    async def get_many(self, matrix_user_ids: Iterable[str]) -> dict[str, str]:
        """The DM room of each of these users that has one."""
        stmt = select(DmRoom.matrix_user_id, DmRoom.room_id).where(
            DmRoom.matrix_user_id.in_(sorted(set(matrix_user_ids)))
        )
        return {user: room for user, room in (await self._session.execute(stmt)).all()}

    async def set(self, matrix_user_id: str, room_id: str) -> None:
        row = await self._session.get(DmRoom, matrix_user_id)
        if row is None:
            self._session.add(
                DmRoom(matrix_user_id=matrix_user_id, room_id=room_id, created_at=self._clock())
            )
        elif row.room_id != room_id:
            row.room_id = room_id
            row.created_at = self._clock()
        await self._session.flush()

    async def user_for_room(self, room_id: str) -> str | None:
        stmt = select(DmRoom.matrix_user_id).where(DmRoom.room_id == room_id).limit(1)
        return (await self._session.execute(stmt)).scalar_one_or_none()

    async def delete(self, matrix_user_id: str) -> bool:
        result = await self._session.execute(delete(DmRoom).where(DmRoom.matrix_user_id == matrix_user_id))
        return _rowcount(result) > 0


class MatrixSessionRepository:
    """The bot's own Matrix login (a single row)."""

    def __init__(self, session: AsyncSession, keyring: KeyRing, clock: Clock = utc_now) -> None:
        self._session, self._keyring, self._clock = session, keyring, clock

    async def get(self) -> MatrixSessionRecord | None:
        row = await self._session.get(MatrixSession, 1)
        if row is None:
            return None
        token = self._keyring.decrypt(
            row.access_token_encrypted, matrix_token_aad(row.user_id, row.device_id)
        )
        return MatrixSessionRecord(row.user_id, row.device_id, token, row.sync_token, row.updated_at)

    async def save(self, *, user_id: str, device_id: str, access_token: str) -> MatrixSessionRecord:
        """Store the login. A different user or device starts over without a sync token."""
        row = await self._session.get(MatrixSession, 1)
        if row is None:
            row = MatrixSession(id=1, sync_token=None)
            self._session.add(row)
        elif (row.user_id, row.device_id) != (user_id, device_id):
            row.sync_token = None
        row.user_id = user_id
        row.device_id = device_id
        row.access_token_encrypted = self._keyring.encrypt(access_token, matrix_token_aad(user_id, device_id))
        row.updated_at = self._clock()
        await self._session.flush()
        return MatrixSessionRecord(user_id, device_id, access_token, row.sync_token, row.updated_at)

    async def save_sync_token(self, sync_token: str) -> bool:
        """Remember where sync got to; False if there is no stored session."""
        stmt = (
            update(MatrixSession)
            .where(MatrixSession.id == 1)
            .values(sync_token=sync_token, updated_at=self._clock())
        )
        return _rowcount(await self._session.execute(stmt)) > 0

    async def delete(self) -> bool:
        return _rowcount(await self._session.execute(delete(MatrixSession))) > 0


class HandledEventsRepository:
    """Matrix command events already acted on, so each is acted on once across restarts."""

    def __init__(self, session: AsyncSession, clock: Clock = utc_now) -> None:
        self._session, self._clock = session, clock

    async def mark_handled(self, event_id: str, room_id: str) -> bool:
        """Record the event; False if it was recorded before (do not act on it again)."""
        values = {"event_id": event_id, "room_id": room_id, "handled_at": self._clock()}
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(HandledEvent)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[HandledEvent.event_id])
            .returning(HandledEvent.event_id)
        )
        return (await self._session.execute(stmt)).first() is not None

    async def prune(self, older_than: datetime) -> int:
        stmt = delete(HandledEvent).where(HandledEvent.handled_at < older_than)
        return _rowcount(await self._session.execute(stmt))


def _rowcount(result: Any) -> int:
    count = result.rowcount
    assert isinstance(count, int)
    return count
