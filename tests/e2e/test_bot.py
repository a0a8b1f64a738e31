"""The product as a person meets it: a real Synapse, the fake GoToSocial, a second client playing the user."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.bot_harness import (
    bot_config,
    connect_account,
    new_bot,
    new_bot_account,
    next_text,
    open_dm,
    run_bot,
    say,
)
from tests.e2e.conftest import MakeHuman
from tests.e2e.synapse import Synapse
from tests.fakes.gotosocial import FakeGoToSocial
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"


@pytest.fixture
async def gts() -> FakeGoToSocial:
    async with FakeGoToSocial() as server:
        server.add_user("alice", EMAIL, PASSWORD)
        server.add_user("bob", "bob@example.org", PASSWORD)
        yield server  # type: ignore[misc]


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted-dm", "plain-dm"])
async def test_connect_relay_status_revoke_without_leaking_secrets(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path, encrypted: bool
) -> None:
    bot_user, bot_password = await new_bot_account(synapse)
    config = bot_config(synapse, bot_user, bot_password, tmp_path / "data")
    alice = await make_human("alice")
    async with run_bot(config) as running:
        room = await open_dm(alice, bot_user, encrypted=encrypted)
        reply, code = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
        assert f"Connected as @alice@{gts.host}" in reply
        assert "Granted scopes: read" in reply
        [token] = gts.active_tokens("alice")

        gts.notify("alice", "mention", "bob", status_text="hello from the fediverse")
        relayed = await next_text(alice, room, bot_user)
        assert "mentioned you" in relayed
        assert "hello from the fediverse" in relayed

        status = await say(alice, room, bot_user, "!gts status")
        assert f"1. @alice@{gts.host} — relaying" in status

        revoked = await say(alice, room, bot_user, "!gts revoke")
        assert f"Revoked @alice@{gts.host}" in revoked
        assert gts.active_tokens("alice") == []
        assert gts.open_streams("alice") == 0  # the bot closed its own socket: the server would not
        assert "no connected accounts" in await say(alice, room, bot_user, "!gts status")
        await running.shutdown()

    client_secret = next(iter(gts.apps.values())).client_secret
    logs = running.log.getvalue()
    assert "connect" in logs  # the capture really saw the run
    for secret in (token, code, client_secret, bot_password):
        assert secret not in logs
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    sqlite_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("gts-bot.sqlite3*"))
    for secret in (token, client_secret):
        assert secret.encode() not in sqlite_bytes


async def test_group_room_gets_only_a_pointer_and_a_leaked_code_is_redacted(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path
) -> None:
    bot_user, config = await new_bot(synapse, tmp_path / "data")
    alice, carol = await make_human("alice"), await make_human("carol")
    async with run_bot(config):
        group = await alice.create_room([bot_user, carol.user_id])
        await carol.accept_invite()
        await alice.wait_member(group, bot_user)
        await alice.set_power(group, bot_user, 50)

        pointer = await say(alice, group, bot_user, f"!gts connect {gts.base_url}")
        assert pointer == "I've sent you a direct message."
        dm = await alice.accept_invite()
        instructions = await next_text(alice, dm, bot_user)
        assert "/oauth/authorize?" in instructions

        url = instructions[instructions.index("http") :].split()[0]
        code = await gts.authorize(url, EMAIL, PASSWORD)
        leaked = await alice.send_text(group, code)
        warning = await next_text(alice, dm, bot_user)
        assert "I removed that message" in warning
        assert "used that code up myself" in warning
        assert "pending connection is cancelled" in warning
        await _until_redacted(synapse, alice.access_token, group, leaked)
        assert gts.active_tokens("alice") == []  # the bot redeemed the code and revoked the token
        assert gts.requests_to("/oauth/revoke") == 1

        # the flow is gone: the same code completes nothing, even in the DM
        assert "No connection is waiting" in await say(alice, dm, bot_user, f"!gts code {code}")


async def test_a_code_from_another_user_completes_nothing(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path
) -> None:
    bot_user, config = await new_bot(synapse, tmp_path / "data")
    alice, mallory = await make_human("alice"), await make_human("mallory")
    async with run_bot(config):
        alice_dm = await open_dm(alice, bot_user)
        mallory_dm = await open_dm(mallory, bot_user)
        instructions = await say(alice, alice_dm, bot_user, f"!gts connect {gts.base_url}")
        code = await gts.authorize(instructions[instructions.index("http") :].split()[0], EMAIL, PASSWORD)

        assert "No connection is waiting" in await say(mallory, mallory_dm, bot_user, f"!gts code {code}")
        assert "no connected accounts" in await say(mallory, mallory_dm, bot_user, "!gts status")
        # alice's flow is untouched and still completes
        assert "Connected as @alice@" in await say(alice, alice_dm, bot_user, code)


async def test_commands_help_unknown_usage_and_bad_input(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path
) -> None:
    bot_user, config = await new_bot(synapse, tmp_path / "data")
    alice = await make_human("alice")
    async with run_bot(config):
        room = await open_dm(alice, bot_user)
        help_text = await say(alice, room, bot_user, "!gts help")
        for name in ("connect", "code", "cancel", "status", "revoke", "notify", "pause", "resume"):
            assert f"!gts {name}" in help_text
        assert "Unknown command 'frobnicate'" in await say(alice, room, bot_user, "!gts frobnicate")
        usage = await say(alice, room, bot_user, "!gts connect")
        assert "Usage: !gts connect <instance> [interactive|scopes]" in usage
        bad = await say(alice, room, bot_user, "!gts connect https://evil.example/path?x=1")
        assert "path" in bad.lower()
        assert "does not look like an authorization code" in await say(alice, room, bot_user, "!gts code x")
        assert "Nothing to cancel" in await say(alice, room, bot_user, "!gts cancel")
        assert await say(alice, room, bot_user, "!gts connect 127.0.0.1:1") != ""


async def test_restart_keeps_session_and_answers_missed_commands_once(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path
) -> None:
    bot_user, config = await new_bot(synapse, tmp_path / "data")
    alice = await make_human("alice")
    async with run_bot(config) as running:
        room = await open_dm(alice, bot_user)
        assert "no connected accounts" in await say(alice, room, bot_user, "!gts status")
        await running.shutdown()
    devices_before = await synapse.devices(bot_user)

    await alice.send_text(room, "!gts status")  # sent while the bot is down
    async with run_bot(config):
        assert "no connected accounts" in await next_text(alice, room, bot_user)
        # Answered once: the next answer is the one to a later command, not the same status again.
        assert "Unknown command 'later'" in await say(alice, room, bot_user, "!gts later")
    assert await synapse.devices(bot_user) == devices_before  # no second login


async def _until_redacted(synapse: Synapse, token: str, room_id: str, event_id: str) -> None:
    """Ask the server (not the test client's cache) until the event's content is removed."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(event_id)}"

    async def redacted() -> bool:
        event = (await synapse.client_request(token, "GET", path)).json()
        return "redacted_because" in event.get("unsigned", {}) and not event.get("content")

    await wait_until(redacted, interval=0.25, what=f"{event_id} redacted on the server")


async def test_undecryptable_message_gets_an_explanation(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path
) -> None:
    bot_user, config = await new_bot(synapse, tmp_path / "data")
    alice = await make_human("alice")
    async with run_bot(config):
        room = await open_dm(alice, bot_user)
        await alice.send_undecryptable(room, "!gts status")
        answer = await next_text(alice, room, bot_user)
        assert "could not read your encrypted message" in answer
        assert "did not share the message's key" in answer


async def test_leaving_the_dm_stops_relaying_until_a_new_dm(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path
) -> None:
    bot_user, config = await new_bot(synapse, tmp_path / "data")
    alice = await make_human("alice")
    async with run_bot(config):
        room = await open_dm(alice, bot_user)
        reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
        assert "Connected as" in reply
        sent_before_leaving = await _messages_from(synapse, room, bot_user)
        await alice.client.room_leave(room)
        await _until_left(synapse, room, bot_user)  # the bot saw the leave and left too
        gts.notify("alice", "mention", "bob", status_text="while you were away")
        # a new DM: the waiting notification is delivered there, not lost
        new_room = await alice.create_dm(bot_user)
        texts = [await next_text(alice, new_room, bot_user) for _ in range(2)]  # greeting + notification
        assert any("while you were away" in t for t in texts), texts
        # it went to the new DM only: the old room, read on the server, got nothing more from the bot
        assert await _messages_from(synapse, room, bot_user) == sent_before_leaving


async def _until_left(synapse: Synapse, room_id: str, user_id: str) -> None:
    async def left() -> bool:
        members = await synapse.admin_request("GET", f"/_synapse/admin/v1/rooms/{quote(room_id)}/members")
        return user_id not in members["members"]

    await wait_until(left, interval=0.25, what=f"{user_id} to leave {room_id}")


async def _messages_from(synapse: Synapse, room_id: str, sender: str) -> list[str]:
    """Event ids of the messages (encrypted or not) `sender` sent to the room, from the server's history."""
    path = f"/_synapse/admin/v1/rooms/{quote(room_id)}/messages?dir=b&limit=1000"
    events = (await synapse.admin_request("GET", path))["chunk"]
    kinds = {"m.room.message", "m.room.encrypted"}
    return [e["event_id"] for e in events if e["sender"] == sender and e["type"] in kinds]
