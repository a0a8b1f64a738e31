"""A restart after more events than the sync timeline limit: the gap is fetched and delivered in order."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from bot.matrix.nio_client import SYNC_FILTER
from bot.matrix.types import IncomingMessage, Invite, RoomId, UserId
from tests.e2e.conftest import MakeHuman
from tests.e2e.synapse import Synapse
from tests.e2e.test_matrix_adapter import BotAccount, Recorder, running

pytestmark = pytest.mark.e2e

TIMELINE_LIMIT: int = SYNC_FILTER["room"]["timeline"]["limit"]


@pytest.fixture
async def gap_bot(synapse: Synapse, tmp_path: Path) -> BotAccount:
    password = secrets.token_hex(12)
    user_id = await synapse.create_account(f"bot-{secrets.token_hex(4)}", password)
    return BotAccount(UserId(user_id), password, tmp_path / "nio-store")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_commands_beyond_the_timeline_limit_are_delivered_once_in_order_after_a_restart(
    synapse: Synapse, make_human: MakeHuman, gap_bot: BotAccount, encrypted: bool
) -> None:
    erin = await make_human("erin")
    await synapse.override_ratelimit(erin.user_id)
    first = gap_bot.adapter(synapse)
    await first.start()
    rec = Recorder(first)
    async with running(first, rec):
        dm = RoomId(await erin.create_dm(gap_bot.user_id, encrypted=encrypted))
        await rec.next(Invite, lambda i: i.room_id == dm)
        await erin.wait_member(dm, gap_bot.user_id)
        await erin.send_text(dm, "before")
        await rec.next(IncomingMessage, lambda m: m.body == "before")

    # The bot is down: more messages than one sync's timeline holds.
    sent = ["!marker-first", *(f"message {i:03}" for i in range(1, 131))]
    assert len(sent) > TIMELINE_LIMIT
    for body in sent:
        await erin.send_text(dm, body)

    second = gap_bot.adapter(synapse)
    await second.start()
    rec2 = Recorder(second)
    async with running(second, rec2):
        await rec2.next(IncomingMessage, lambda m: m.body == sent[-1])
        await erin.send_text(dm, "after")
        await rec2.next(IncomingMessage, lambda m: m.body == "after")
    got = [e for e in rec2.seen if isinstance(e, IncomingMessage)]
    assert [m.body for m in got] == [*sent, "after"]
    assert rec2.messages().count("!marker-first") == 1
    assert len({m.event_id for m in got}) == len(got)
    assert all(m.is_encrypted == encrypted and m.sender == erin.user_id and m.room_id == dm for m in got)
    assert [e for e in rec2.seen if not isinstance(e, IncomingMessage)] == []

    third = gap_bot.adapter(synapse)
    await third.start()
    rec3 = Recorder(third)
    async with running(third, rec3):
        await erin.send_text(dm, "marker 3")
        await rec3.next(IncomingMessage, lambda m: m.body == "marker 3")
    assert rec3.messages() == ["marker 3"]  # nothing delivered twice
