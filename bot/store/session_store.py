"""The Matrix adapter's SessionStore and the router's HandledEvents, backed by the database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.matrix.types import DeviceId, StoredSession, UserId
from bot.store.keyring import KeyRing
from bot.store.repositories import HandledEventsRepository, MatrixSessionRepository


class DatabaseSessionStore:
    """Keeps the bot's login (access token encrypted) and its sync token."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> None:
        self._sessions = sessions
        self._keyring = keyring

    async def load(self) -> StoredSession | None:
        async with self._sessions() as session:
            record = await MatrixSessionRepository(session, self._keyring).get()
        if record is None:
            return None
        return StoredSession(
            UserId(record.user_id), DeviceId(record.device_id), record.access_token, record.sync_token
        )

    async def save(self, user_id: UserId, device_id: DeviceId, access_token: str) -> None:
        async with self._sessions() as session, session.begin():
            await MatrixSessionRepository(session, self._keyring).save(
                user_id=user_id, device_id=device_id, access_token=access_token
            )

    async def save_sync_token(self, token: str) -> None:
        async with self._sessions() as session, session.begin():
            await MatrixSessionRepository(session, self._keyring).save_sync_token(token)


class DatabaseHandledEvents:
    """Each Matrix command event is acted on once, also when a restart replays it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def mark_handled(self, event_id: str, room_id: str) -> bool:
        async with self._sessions() as session, session.begin():
            return await HandledEventsRepository(session).mark_handled(event_id, room_id)
