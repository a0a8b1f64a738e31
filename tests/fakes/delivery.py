"""An in-memory `DeliveryStorage`: delivery logic without a database."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bot.relay.outbox_writer import OutboxDraft
from bot.store.event_map import RelayedTarget
from bot.store.outbox import OutboxId, OutboxRecord
from bot.store.records import AccountId

__all__ = ["ROOM", "MemoryStore"]

ROOM = "!dm:example.net"


@dataclass
class MemoryStore:
    room: str | None = ROOM
    outbox: list[OutboxRecord] = field(default_factory=list)
    cursors: dict[AccountId, str] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    mapped: dict[str, RelayedTarget] = field(default_factory=dict)  # the event map: sent event → target

    async def current_room(self) -> str | None:
        return self.room

    async def write_batch(
        self, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None:
        if self.room is None:
            return None
        if not drafts:
            self.cursors.update(cursors)
            return []
        records = [
            OutboxRecord(
                id=OutboxId(next(self.ids)), matrix_user_id="@alice:example.net", room_id=self.room,
                txn_id=d.txn_id, body=d.body, html=d.html,
                cursors=dict(cursors) if index == len(drafts) - 1 else {}, created_at=datetime.now(UTC),
                shows=d.shows,
            )
            for index, d in enumerate(drafts)
        ]
        self.outbox.extend(records)
        return records

    async def retarget(self, record: OutboxRecord, room_id: str) -> OutboxRecord:
        return replace(record, room_id=room_id)

    async def commit(self, record: OutboxRecord, *, sent_as: str | None = None) -> None:
        if sent_as is not None and record.shows is not None:
            self.mapped[sent_as] = record.shows
        self.cursors.update(record.cursors)
        self.outbox.remove(record)

    async def withdraw(self, records: Sequence[OutboxRecord]) -> None:
        for record in records:
            self.outbox.remove(record)
