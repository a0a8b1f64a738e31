"""The event map: Matrix event id of a relayed message → what it shows (see `models.RelayedEvent`).

Repositories never commit. `RelayedTarget` travels in the outbox row (`shows`) from the moment a message
is prepared until it is sent, so the map row can be written in the transaction that finishes the row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.models import RelayedEvent
from bot.store.records import AccountId, Clock, affected_rows, utc_now

__all__ = ["RelayedEventRecord", "RelayedEventsRepository", "RelayedTarget", "SentMessage"]


@dataclass(frozen=True)
class RelayedTarget:
    """The one notification a relay message shows."""

    account_id: AccountId
    notification_id: str
    notification_type: str
    status_id: str | None = None
    requester_account_id: str | None = None  # the remote account of a follow request

    def to_json(self) -> str:
        return json.dumps(
            {
                "account": int(self.account_id),
                "notification": self.notification_id,
                "type": self.notification_type,
                "status": self.status_id,
                "requester": self.requester_account_id,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> RelayedTarget | None:
        """None for NULL or a value this version cannot read (the message is then not mapped)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            account, notification, kind = data["account"], data["notification"], data["type"]
            status, requester = data.get("status"), data.get("requester")
        except (ValueError, KeyError, TypeError):
            return None
        if not (isinstance(account, int) and isinstance(notification, str) and isinstance(kind, str)):
            return None
        return cls(
            AccountId(account),
            notification,
            kind,
            status if isinstance(status, str) else None,
            requester if isinstance(requester, str) else None,
        )


@dataclass(frozen=True)
class SentMessage:
    """A relay message the homeserver took, as event `event_id`, and the notification it shows."""

    event_id: str
    matrix_user_id: str
    room_id: str
    target: RelayedTarget


@dataclass(frozen=True)
class RelayedEventRecord:
    event_id: str
    matrix_user_id: str
    room_id: str
    target: RelayedTarget
    created_at: datetime


class RelayedEventsRepository:
    def __init__(self, session: AsyncSession, clock: Clock = utc_now) -> None:
        self._session, self._clock = session, clock

    async def add(self, *, event_id: str, matrix_user_id: str, room_id: str, target: RelayedTarget) -> None:
        """Map a sent message. A second add of the same event id (a re-sent outbox row the homeserver
        deduplicated) keeps the first row."""
        await self.add_many([SentMessage(event_id, matrix_user_id, room_id, target)])

    async def add_many(self, sent: Sequence[SentMessage]) -> None:
        """`add` for several messages, with one statement."""
        if not sent:
            return
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(RelayedEvent).on_conflict_do_nothing(index_elements=[RelayedEvent.event_id])
        created_at = self._clock()
        values = [
            {
                "event_id": message.event_id,
                "matrix_user_id": message.matrix_user_id,
                "account_id": int(message.target.account_id),
                "room_id": message.room_id,
                "notification_id": message.target.notification_id,
                "notification_type": message.target.notification_type,
                "status_id": message.target.status_id,
                "requester_account_id": message.target.requester_account_id,
                "created_at": created_at,
            }
            for message in sent
        ]
        await self._session.execute(stmt, values)

    async def get(self, event_id: str) -> RelayedEventRecord | None:
        row = await self._session.get(RelayedEvent, event_id)
        if row is None:
            return None
        target = RelayedTarget(
            AccountId(row.account_id),
            row.notification_id,
            row.notification_type,
            row.status_id,
            row.requester_account_id,
        )
        return RelayedEventRecord(row.event_id, row.matrix_user_id, row.room_id, target, row.created_at)

    async def delete_for_account(self, account_id: AccountId) -> int:
        stmt = delete(RelayedEvent).where(RelayedEvent.account_id == int(account_id))
        return affected_rows(await self._session.execute(stmt))

    async def delete_for_user(self, matrix_user_id: str) -> int:
        stmt = delete(RelayedEvent).where(RelayedEvent.matrix_user_id == matrix_user_id)
        return affected_rows(await self._session.execute(stmt))

    async def prune(self, older_than: datetime) -> int:
        stmt = delete(RelayedEvent).where(RelayedEvent.created_at < older_than)
        return affected_rows(await self._session.execute(stmt))

    async def count_for_user(self, matrix_user_id: str) -> int:
        mine = RelayedEvent.matrix_user_id == matrix_user_id
        stmt = select(func.count()).select_from(RelayedEvent).where(mine)
        return (await self._session.execute(stmt)).scalar_one()

