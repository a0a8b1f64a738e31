"""A relay worker tells a user something (an account stopped working) through the outbox: only the
Matrix process talks to Matrix. The row is written with a NOTIFY, so the Matrix process sends it at once.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxRepository
from bot.store.pg_notify import OUTBOX_CHANNEL, notify
from bot.store.repositories import DmRoomsRepository

__all__ = ["OutboxNotices"]

log = logging.getLogger(__name__)


class OutboxNotices:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> None:
        self._sessions = sessions
        self._keyring = keyring

    async def __call__(self, matrix_user_id: str, plain: str, html: str) -> None:
        async with self._sessions() as session, session.begin():
            room_id = await DmRoomsRepository(session).get(matrix_user_id)
            if room_id is None:
                log.info("no DM room with %s; a notice for them is not sent", matrix_user_id)
                return
            await OutboxRepository(session, self._keyring).add(
                matrix_user_id=matrix_user_id,
                room_id=room_id,
                txn_id=f"gts.notice.{secrets.token_hex(16)}",
                body=plain,
                html=html,
                cursors={},
            )
            await notify(session, OUTBOX_CHANNEL)
