"""Acting on the fediverse from an encrypted Matrix DM, end to end: the whole bot, the real Synapse, and the
fake server in every profile. Replies, ⭐/🔁 and taking them back, ✅ on a follow request, the read-only
hint, and a post whose answer was lost, replayed after a restart, that is not posted twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.bot_harness import URL, bot_config, new_bot_account, next_text, open_dm, run_bot, say
from tests.e2e.conftest import MakeHuman
from tests.e2e.human import Human
from tests.e2e.synapse import Synapse
from tests.fakes.gotosocial import AKKOMA, GOTOSOCIAL, ICESHRIMP, MASTODON, FakeGoToSocial, Profile
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"
ACT = "read write:statuses write:favourites write:follows"
PROFILES = pytest.mark.parametrize("profile", [GOTOSOCIAL, MASTODON, AKKOMA, ICESHRIMP], ids=lambda p: p.name)


async def connect(alice: Human, room: str, bot_user: str, gts: FakeGoToSocial, scopes: str) -> None:
    instructions = await say(alice, room, bot_user, f"!gts connect {gts.base_url} {scopes}")
    match = URL.search(instructions)
    assert match, instructions
    code = await gts.authorize(match.group(0), EMAIL, PASSWORD)
    assert "Connected as" in await say(alice, room, bot_user, code)
    await wait_until(lambda: gts.open_streams("alice") == 1, timeout=30.0, what="the stream")


async def relayed(alice: Human, room: str, bot_user: str, marker: str) -> Any:
    """The bot's next message, which must mention `marker`; returns the nio event (for its id)."""
    event = await alice.wait_message(room, bot_user)
    assert marker in getattr(event, "body", ""), event
    return event


def replies(gts: FakeGoToSocial) -> list[dict[str, Any]]:
    return [s for s in gts.posted_statuses("alice") if s.get("in_reply_to_id")]


@PROFILES
async def test_reply_favourite_boost_undo_and_follow_request(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path, profile: Profile
) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        alice = await make_human("alice")
        async with run_bot(bot_config(synapse, bot_user, bot_password, tmp_path / "data")):
            room = await open_dm(alice, bot_user)
            await connect(alice, room, bot_user, gts, ACT)

            gts.seed_status("carol@third.example", "hi")
            mention = gts.notify(
                "alice", "mention", "bob@remote.example", status_text="@alice @carol@third.example lunch?"
            )
            status_id = mention["status"]["id"]
            gts.state.writes.statuses[status_id].body["visibility"] = "private"
            message = await relayed(alice, room, bot_user, "lunch?")

            await alice.reply(room, message.event_id, "yes, at noon", quoted="lunch?")
            confirmation = await next_text(alice, room, bot_user)
            [posted] = replies(gts)
            assert posted["in_reply_to_id"] == status_id
            assert posted["visibility"] == "private"
            assert {m["acct"] for m in posted["mentions"]} >= {"bob@remote.example"}
            assert "yes, at noon" in posted["content"]
            assert confirmation.startswith("Replied as @alice@")
            assert posted["url"] in confirmation

            star = await alice.react(room, message.event_id, "⭐", encrypted=True)
            assert (await next_text(alice, room, bot_user)).startswith("Favourited")
            assert gts.favourited("alice", status_id)
            boost = await alice.react(room, message.event_id, "🔁")  # in the clear, as nio sends it
            assert (await next_text(alice, room, bot_user)).startswith("Boosted")
            assert gts.reblogged("alice", status_id)

            await alice.redact(room, star)
            assert (await next_text(alice, room, bot_user)).startswith("Removed the favourite")
            assert not gts.favourited("alice", status_id)
            await alice.redact(room, boost)
            assert (await next_text(alice, room, bot_user)).startswith("Undid the boost")
            assert not gts.reblogged("alice", status_id)

            requester = gts.seed_follow_request("alice", "dave@remote.example")
            gts.notify("alice", "follow_request", "dave@remote.example")
            request = await relayed(alice, room, bot_user, "dave@remote.example")
            await alice.react(room, request.event_id, "✅", encrypted=True)
            assert (await next_text(alice, room, bot_user)).startswith("Accepted the follow request")
            assert requester in gts.followers("alice")
            assert gts.pending_follow_requests("alice") == []


async def test_a_read_only_account_gets_a_hint_and_the_server_no_write_call(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path
) -> None:
    async with FakeGoToSocial(profile=GOTOSOCIAL) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        alice = await make_human("alice")
        async with run_bot(bot_config(synapse, bot_user, bot_password, tmp_path / "data")):
            room = await open_dm(alice, bot_user)
            await connect(alice, room, bot_user, gts, "read")
            gts.notify("alice", "mention", "bob@remote.example", status_text="@alice read only")
            message = await relayed(alice, room, bot_user, "read only")

            await alice.react(room, message.event_id, "⭐", encrypted=True)
            await alice.reply(room, message.event_id, "hello?")
            hint = await next_text(alice, room, bot_user)
            assert "read-only" in hint
            # The positive marker: a command answered after both, and no second hint before it.
            assert "@alice@" in await say(alice, room, bot_user, "!gts status")
            assert gts.write_calls == []


def _sync_token(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "gts-bot.sqlite3") as db:
        (token,) = db.execute("SELECT sync_token FROM matrix_session").fetchone()
    assert isinstance(token, str)
    return token


def _rewind_sync_token(data_dir: Path, token: str) -> None:
    with sqlite3.connect(data_dir / "gts-bot.sqlite3") as db:
        db.execute("UPDATE matrix_session SET sync_token = ?", (token,))


@PROFILES
async def test_a_reply_whose_answer_was_lost_is_not_posted_twice_after_a_restart_and_replay(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path, profile: Profile
) -> None:
    """The server posts but the bot never hears back (the connection drops), so its journal entry stays
    pending; the bot stops; the sync is replayed from before the reply. The replay finds the post (or the
    server's Idempotency-Key answers with it) and confirms it, instead of posting again."""
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        alice = await make_human("alice")
        data = tmp_path / "data"
        config = bot_config(synapse, bot_user, bot_password, data)
        async with run_bot(config) as running:
            room = await open_dm(alice, bot_user)
            await connect(alice, room, bot_user, gts, ACT)
            gts.notify("alice", "mention", "bob@remote.example", status_text="@alice are you there")
            message = await relayed(alice, room, bot_user, "are you there")
            before_reply = _sync_token(data)

            gts.faults.drop_after_write.add("/api/v1/statuses")
            await alice.reply(room, message.event_id, "I am here")
            failure = await next_text(alice, room, bot_user)
            assert not failure.startswith("Replied"), failure
            assert len(replies(gts)) == 1  # the server did post
            await running.shutdown()

        gts.faults.drop_after_write.clear()
        _rewind_sync_token(data, before_reply)
        async with run_bot(config):
            confirmation = await next_text(alice, room, bot_user, timeout=120.0)
            [posted] = replies(gts)
            assert confirmation.startswith("Replied as @alice@")
            assert posted["url"] in confirmation
            # The positive marker that the replay is over: a later command's answer.
            assert "@alice@" in await say(alice, room, bot_user, "!gts status")
            assert len(replies(gts)) == 1


async def test_another_users_reaction_in_the_same_room_does_nothing(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path
) -> None:
    async with FakeGoToSocial(profile=GOTOSOCIAL) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        alice, eve = await make_human("alice"), await make_human("eve")
        async with run_bot(bot_config(synapse, bot_user, bot_password, tmp_path / "data")):
            room = await open_dm(alice, bot_user)
            await connect(alice, room, bot_user, gts, ACT)
            gts.notify("alice", "mention", "bob@remote.example", status_text="@alice for alice only")
            message = await relayed(alice, room, bot_user, "for alice only")

            await alice.invite(room, eve.user_id)
            await eve.accept_invite()
            await eve.react(room, message.event_id, "⭐")
            await eve.react(room, message.event_id, "🔁", encrypted=True)
            await eve.reply(room, message.event_id, "posted as alice?")
            # Eve's next command runs after her reactions and reply (one queue per user): its answer
            # is the marker that they were handled.
            await eve.send_text(room, "!gts help")
            texts = [await next_text(alice, room, bot_user) for _ in range(2)]
            while not any("Start with:" in t for t in texts):
                texts.append(await next_text(alice, room, bot_user))
            assert gts.write_calls == []
            assert not any(t.startswith(("Favourited", "Boosted", "Replied")) for t in texts)
