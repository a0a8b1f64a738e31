"""How much room state the adapter's DM check downloads: nothing for a room the sync shows with
someone else in it, and the state of a room of two (or fewer: a DM just created) or of a room the sync
has not shown yet. matrix-nio is replaced at its seam by a recording client (rooms as the sync left
them, and the state request)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nio
import pytest

from bot.matrix.adapter import MatrixAdapter
from bot.matrix.session import Credentials
from bot.matrix.types import DeviceId, RoomId, StoredSession, UserId

BOT, ALICE = UserId("@bot:hs.test"), UserId("@alice:hs.test")
GROUP, DM, NEW = RoomId("!group:hs.test"), RoomId("!dm:hs.test"), RoomId("!new:hs.test")


def private_dm_state(room_id: str) -> list[Mapping[str, Any]]:
    def state(kind: str, key: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "state_key": key, "sender": ALICE, "content": content}

    return [
        state("m.room.create", "", {"room_version": "10", "creator": ALICE}),
        state("m.room.member", ALICE, {"membership": "join"}),
        state("m.room.member", BOT, {"membership": "join"}),
        state("m.room.join_rules", "", {"join_rule": "invite"}),
        state("m.room.history_visibility", "", {"history_visibility": "shared"}),
    ]


class RecordingNio:
    def __init__(self) -> None:
        self.rooms: dict[str, nio.MatrixRoom] = {}
        self.state_requests: list[str] = []

    def room(self, room_id: str, members: list[str]) -> None:
        room = nio.MatrixRoom(room_id, BOT)
        for user in members:
            room.add_member(user, None, None)
        self.rooms[room_id] = room

    async def room_get_state(self, room_id: str) -> nio.RoomGetStateResponse:
        self.state_requests.append(room_id)
        return nio.RoomGetStateResponse(private_dm_state(room_id), room_id)


class NoSessions:
    async def load(self) -> StoredSession | None:
        return None

    async def save(self, user_id: UserId, device_id: DeviceId, access_token: str) -> None:
        return None

    async def save_sync_token(self, token: str) -> None:
        return None


@pytest.fixture
def adapter_and_nio(tmp_path: Path) -> tuple[MatrixAdapter, RecordingNio]:
    adapter = MatrixAdapter(
        Credentials("https://hs.test", BOT, tmp_path, pickle_key="a-test-pickle-key"), NoSessions()
    )
    fake = RecordingNio()
    adapter._client = fake
    return adapter, fake


async def test_a_big_group_room_is_no_dm_without_downloading_its_state(
    adapter_and_nio: tuple[MatrixAdapter, RecordingNio],
) -> None:
    adapter, fake = adapter_and_nio
    fake.room(GROUP, [BOT, ALICE, *(f"@member{i}:hs.test" for i in range(5000))])
    for _ in range(20):  # every command in the room asks again
        assert not await adapter.is_one_to_one(GROUP, ALICE)
    assert fake.state_requests == []


async def test_a_room_of_two_and_an_unsynced_room_are_checked_with_the_server(
    adapter_and_nio: tuple[MatrixAdapter, RecordingNio],
) -> None:
    adapter, fake = adapter_and_nio
    fake.room(DM, [BOT, ALICE])
    fake.room(NEW, [BOT])  # created a moment ago: the sync showed it before the invite
    assert await adapter.is_one_to_one(DM, ALICE)
    assert await adapter.is_one_to_one(NEW, ALICE)
    assert await adapter.is_one_to_one(RoomId("!unsynced:hs.test"), ALICE)
    assert fake.state_requests == [DM, NEW, "!unsynced:hs.test"]
