"""The relay outbox: messages stored before they are sent (see `models.OutboxMessage`). Never commits."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.event_map import RelayedTarget
from bot.store.keyring import KeyRing, aad_for
from bot.store.models import OutboxMessage
from bot.store.records import AccountId, Clock, affected_rows, utc_now

__all__ = [
    "NewOutboxRow",
    "OutboxId",
    "OutboxRecord",
    "OutboxRepository",
    "format_cursors",
    "outbox_message_aad",
    "parse_cursors",
]

OutboxId = int


def format_cursors(cursors: Mapping[AccountId, str]) -> str:
    return " ".join(f"{account_id}:{cursor}" for account_id, cursor in sorted(cursors.items()))


def parse_cursors(text: str) -> dict[AccountId, str]:
    out: dict[AccountId, str] = {}
    for pair in text.split():
        account_id, _, cursor = pair.partition(":")
        if account_id.isdigit() and cursor:
            out[AccountId(int(account_id))] = cursor
    return out


@dataclass(frozen=True)
class NewOutboxRow:
    """A message about to be stored."""

    matrix_user_id: str
    room_id: str
    txn_id: str
    body: str
    html: str
    cursors: Mapping[AccountId, str]
    shows: RelayedTarget | None = None


@dataclass(frozen=True)
class OutboxRecord:
    id: OutboxId
    matrix_user_id: str
    room_id: str
    txn_id: str
    body: str
    html: str
    cursors: Mapping[AccountId, str]  # committed with the send; may be empty
    created_at: datetime
    shows: RelayedTarget | None = None  # mapped to the sent event id (None: a grouped message)


def outbox_message_aad(txn_id: str, matrix_user_id: str) -> bytes:
    return aad_for("outbox-message", txn_id, matrix_user_id)


class OutboxRepository:
    """`keyring` seals and opens the messages' texts: needed to add or read whole messages, not to
    list, move or delete them."""

    def __init__(self, session: AsyncSession, keyring: KeyRing | None = None, clock: Clock = utc_now) -> None:
        self._session, self._keyring, self._clock = session, keyring, clock

    def _ring(self) -> KeyRing:
        assert self._keyring is not None, "outbox messages are stored encrypted"
        return self._keyring

    def _record(self, row: OutboxMessage) -> OutboxRecord:
        if row.message_encrypted is not None:
            sealed = self._ring().decrypt(
                row.message_encrypted, outbox_message_aad(row.txn_id, row.matrix_user_id)
            )
            message = json.loads(sealed)
            body, html = message["plain"], message["html"]
        else:  # written before messages were encrypted
            body, html = row.body or "", row.html or ""
        return OutboxRecord(
            id=row.id,
            matrix_user_id=row.matrix_user_id,
            room_id=row.room_id,
            txn_id=row.txn_id,
            body=body,
            html=html,
            cursors=parse_cursors(row.cursors),
            created_at=row.created_at,
            shows=RelayedTarget.from_json(row.shows),
        )

    async def add(
        self,
        *,
        matrix_user_id: str,
        room_id: str,
        txn_id: str,
        body: str,
        html: str,
        cursors: Mapping[AccountId, str],
        shows: RelayedTarget | None = None,
    ) -> OutboxRecord:
        new = NewOutboxRow(matrix_user_id, room_id, txn_id, body, html, cursors, shows)
        (record,) = await self.add_many([new])
        return record

    async def add_many(self, rows: Sequence[NewOutboxRow]) -> list[OutboxRecord]:
        """Store these messages with one statement; their records, in the same order."""
        if not rows:
            return []
        created_at, ring = self._clock(), self._ring()
        values = [
            {
                "matrix_user_id": row.matrix_user_id,
                "room_id": row.room_id,
                "txn_id": row.txn_id,
                "message_encrypted": ring.encrypt(
                    json.dumps({"plain": row.body, "html": row.html}),
                    outbox_message_aad(row.txn_id, row.matrix_user_id),
                ),
                "cursors": format_cursors(row.cursors),
                "shows": None if row.shows is None else row.shows.to_json(),
                "created_at": created_at,
            }
            for row in rows
        ]
        stmt = insert(OutboxMessage).returning(OutboxMessage.id, sort_by_parameter_order=True)
        ids = (await self._session.execute(stmt, values)).scalars().all()
        return [
            OutboxRecord(
                id=OutboxId(outbox_id),
                matrix_user_id=row.matrix_user_id,
                room_id=row.room_id,
                txn_id=row.txn_id,
                body=row.body,
                html=row.html,
                cursors=dict(row.cursors),
                created_at=created_at,
                shows=row.shows,
            )
            for outbox_id, row in zip(ids, rows, strict=True)
        ]

    async def get_by_txn(self, txn_id: str) -> OutboxRecord | None:
        stmt = select(OutboxMessage).where(OutboxMessage.txn_id == txn_id)
        row = (await self._session.execute(stmt)).scalar_one_or_none()
        return None if row is None else self._record(row)

    async def list_all(self) -> list[OutboxRecord]:
        """Every stored message, oldest first (the order they must be sent in)."""
        stmt = select(OutboxMessage).order_by(OutboxMessage.id)
        return [self._record(row) for row in (await self._session.execute(stmt)).scalars()]

    async def waiting_ids(self) -> list[tuple[OutboxId, str]]:
        """(id, Matrix user) of every stored message, oldest first: what a scan needs, without the bodies."""
        stmt = select(OutboxMessage.id, OutboxMessage.matrix_user_id).order_by(OutboxMessage.id)
        return [(OutboxId(i), user) for i, user in (await self._session.execute(stmt)).all()]

    async def get_many(self, ids: Collection[OutboxId]) -> list[OutboxRecord]:
        """These messages (those still stored), oldest first."""
        stmt = select(OutboxMessage).where(OutboxMessage.id.in_(list(ids))).order_by(OutboxMessage.id)
        return [self._record(row) for row in (await self._session.execute(stmt)).scalars()]

    async def waiting_cursors(self, matrix_user_id: str, account_id: AccountId) -> list[str]:
        """The account's cursors in the user's waiting messages (not committed to the account yet)."""
        stmt = select(OutboxMessage.cursors).where(OutboxMessage.matrix_user_id == matrix_user_id)
        rows = (await self._session.execute(stmt)).scalars()
        found = (parse_cursors(text).get(account_id) for text in rows)
        return [cursor for cursor in found if cursor is not None]

    async def delete(self, outbox_id: OutboxId) -> bool:
        return await self.delete_many([outbox_id]) > 0

    async def delete_many(self, outbox_ids: Collection[OutboxId]) -> int:
        """Delete these messages (those still stored) with one statement; returns how many."""
        if not outbox_ids:
            return 0
        stmt = delete(OutboxMessage).where(OutboxMessage.id.in_(sorted(outbox_ids)))
        return affected_rows(await self._session.execute(stmt))

    async def set_room(self, outbox_id: OutboxId, room_id: str) -> bool:
        """Point a waiting message at another room (the user's DM changed); its txn id stays."""
        stmt = update(OutboxMessage).where(OutboxMessage.id == outbox_id).values(room_id=room_id)
        count = getattr(await self._session.execute(stmt), "rowcount", 0)
        return isinstance(count, int) and count > 0

    async def delete_for_user(self, matrix_user_id: str) -> int:
        """Delete every waiting message of a user (forget-me); returns how many."""
        stmt = delete(OutboxMessage).where(OutboxMessage.matrix_user_id == matrix_user_id)
        count = getattr(await self._session.execute(stmt), "rowcount", 0)
        return count if isinstance(count, int) else 0
