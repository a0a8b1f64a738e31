"""The bot's own record of each user's DM room.

The homeserver does not write `m.direct` for the bot, so the bot keeps the record itself. A room counts
as a user's DM only while it is a private 1:1 chat (`matrix.dm_rules.is_private_dm`); a DM that gained a third
member, or that the user left, is replaced by a new one when needed.

The relay re-checks that with `still_private` before each delivery, and the router whenever the room's
membership, join rules or history visibility change: a DM that is no longer private loses its record at
once and `on_lost` observers are told (the router suspends relaying and says so in the room).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.matrix.errors import MatrixError
from bot.matrix.types import RoomId, UserId
from bot.store.repositories import DmRoomsRepository

log = logging.getLogger(__name__)


class RoomsPort(Protocol):
    async def is_one_to_one(self, room_id: RoomId, user_id: UserId) -> bool: ...

    async def create_dm(self, user_id: UserId) -> RoomId: ...

    async def leave(self, room_id: RoomId) -> None: ...


class DmDirectory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], rooms: RoomsPort) -> None:
        self._sessions = sessions
        self._rooms = rooms
        self._observers: list[Callable[[str], None]] = []
        self._lost_observers: list[Callable[[str, str], Awaitable[None]]] = []

    def on_recorded(self, observer: Callable[[str], None]) -> None:
        """Call `observer(user_id)` whenever a user's DM room is recorded or changed."""
        self._observers.append(observer)

    def on_lost(self, observer: Callable[[str, str], Awaitable[None]]) -> None:
        """Await `observer(user_id, room_id)` when a recorded DM turns out not to be private any more."""
        self._lost_observers.append(observer)

    async def still_private(self, user_id: str, room_id: str) -> bool:
        """Whether `room_id` is still a private 1:1 chat with `user_id` (asks the server).

        When it is not and it was the user's recorded DM, the record is dropped and `on_lost` observers
        are awaited, once: a second caller finds no record.
        """
        if await self._rooms.is_one_to_one(RoomId(room_id), UserId(user_id)):
            return True
        if await self.forget_room(user_id, room_id):
            log.warning("the DM %s of %s is not a private chat any more; record dropped", room_id, user_id)
            for observer in self._lost_observers:
                await observer(user_id, room_id)
        return False

    async def recheck(self, room_id: str) -> None:
        """The room's membership or visibility changed: if it is someone's DM, is it still private?"""
        async with self._sessions() as session:
            user = await DmRoomsRepository(session).user_for_room(room_id)
        if user is not None:
            await self.still_private(user, room_id)

    async def room_for(self, user_id: str) -> str | None:
        async with self._sessions() as session:
            return await DmRoomsRepository(session).get(user_id)

    async def record(self, user_id: str, room_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await DmRoomsRepository(session).set(user_id, room_id)
        for observer in self._observers:
            observer(user_id)

    async def is_dm(self, user_id: str, room_id: str) -> bool:
        """Whether `room_id` is `user_id`'s DM with the bot; a 1:1 room the user writes in becomes it."""
        if not await self._rooms.is_one_to_one(RoomId(room_id), UserId(user_id)):
            return False
        if await self.room_for(user_id) != room_id:
            await self.record(user_id, room_id)
        return True

    async def ensure(self, user_id: str) -> str:
        """The user's DM, opened (created and the user invited) when there is none that is still 1:1."""
        current = await self.room_for(user_id)
        if current is not None and await self._rooms.is_one_to_one(RoomId(current), UserId(user_id)):
            return current
        room_id = await self._rooms.create_dm(UserId(user_id))
        log.info("opened a new DM %s with %s", room_id, user_id)
        await self.record(user_id, room_id)
        return room_id

    async def forget_room_of_any_user(self, room_id: str) -> str | None:
        """Drop the record of whichever user had `room_id` as their DM (the bot was removed from it)."""
        async with self._sessions() as session, session.begin():
            repo = DmRoomsRepository(session)
            user = await repo.user_for_room(room_id)
            if user is not None:
                await repo.delete(user)
            return user

    async def forget_room(self, user_id: str, room_id: str) -> bool:
        """Drop the record when `room_id` was the user's DM (they left it)."""
        async with self._sessions() as session, session.begin():
            repo = DmRoomsRepository(session)
            if await repo.get(user_id) != room_id:
                return False
            return await repo.delete(user_id)

    async def leave(self, user_id: str, room_id: str) -> bool:
        """Drop the record (when `room_id` is the user's DM) and leave the room, so the bot stays in no
        chat with a user who asked to be forgotten. False when the server refused the leave (logged)."""
        await self.forget_room(user_id, room_id)
        try:
            await self._rooms.leave(RoomId(room_id))
        except MatrixError as exc:
            log.warning("could not leave the DM %s of %s: %s", room_id, user_id, type(exc).__name__)
            return False
        return True
