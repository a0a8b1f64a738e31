"""The same journey against every server profile of the fake (GoToSocial, Mastodon, Akkoma): connect, live
relay over the stream, a catch-up of 100 waiting notifications with nothing lost, pause/resume, revoke.
A future change that quietly drops a server fails here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tests.e2e.bot_harness import (
    bot_config,
    connect_account,
    new_bot_account,
    next_text,
    open_dm,
    run_bot,
    say,
)
from tests.e2e.conftest import MakeHuman
from tests.e2e.human import Human
from tests.e2e.synapse import Synapse
from tests.fakes.gotosocial import AKKOMA, GOTOSOCIAL, ICESHRIMP, MASTODON, FakeGoToSocial, Profile
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"
BACKLOG = 100
_FOLLOWER = re.compile(r"@f(\d{3})@remote\.example")
_OTHERS = re.compile(r"and (\d+) others? followed you")


async def alice_streams(gts: FakeGoToSocial, count: int, what: str) -> None:
    await wait_until(lambda: gts.open_streams("alice") == count, timeout=30.0, what=what)


async def followers_counted(human: Human, room: str, bot_user: str) -> tuple[int, list[int]]:
    """Read the bot's (grouped) follow messages until they account for BACKLOG followers: "f000 (…), f001
    (…) and 78 others followed you". Returns the count and the followers named, in message order."""
    counted, named, texts = 0, list[int](), list[str]()
    while counted < BACKLOG:
        try:
            text = await next_text(human, room, bot_user, timeout=60.0)
        except AssertionError as exc:
            raise AssertionError(f"{counted} of {BACKLOG} followers in: {texts!r}"[:3000]) from exc
        texts.append(text)
        names = [int(n) for n in _FOLLOWER.findall(text)]
        others = _OTHERS.search(text)
        named.extend(names)
        counted += len(names) + (int(others.group(1)) if others else 0)
    return counted, named


@pytest.mark.parametrize("profile", [GOTOSOCIAL, MASTODON, AKKOMA, ICESHRIMP], ids=lambda p: p.name)
async def test_connect_stream_catch_up_pause_resume_revoke(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path, profile: Profile
) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        config = bot_config(synapse, bot_user, bot_password, tmp_path / "data")
        alice = await make_human("alice")
        async with run_bot(config) as running:
            room = await open_dm(alice, bot_user)
            reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
            assert f"Connected as @alice@{gts.host}" in reply
            await alice_streams(gts, 1, "the stream")
            # The relay catches up once its stream is open: a notification made before that answer could
            # rightly come over REST, so the live one is made after it.
            await wait_until(
                lambda: gts.pages_while_streaming("alice") >= 1, what="the catch-up after opening"
            )

            # live: over the stream (no REST page ever returned it)
            live = gts.notify("alice", "mention", "bob", status_text=f"live on {profile.name}")
            assert f"live on {profile.name}" in await next_text(alice, room, bot_user)
            assert not gts.served_over_rest(live["id"])

            # pause, 100 notifications wait, resume: the catch-up pages through all of them
            assert "Paused" in await say(alice, room, bot_user, "!gts pause")
            await alice_streams(gts, 0, "the stream closed on pause")
            for i in range(BACKLOG):
                gts.notify("alice", "follow", f"f{i:03d}@remote.example")
            assert "Relaying again" in await say(alice, room, bot_user, "!gts resume")
            counted, named = await followers_counted(alice, room, bot_user)
            assert counted == BACKLOG  # none lost, none twice
            assert named == sorted(set(named))  # oldest first, no repeats
            assert named[0] == 0
            await alice_streams(gts, 1, "streaming again after the catch-up")
            gts.notify("alice", "mention", "bob", status_text="after the backlog")
            assert "after the backlog" in await next_text(alice, room, bot_user)

            revoked = await say(alice, room, bot_user, "!gts revoke")
            assert f"Revoked @alice@{gts.host}" in revoked
            assert gts.active_tokens("alice") == []
            await alice_streams(gts, 0, "the stream closed on revoke")
            await running.shutdown()


async def test_a_gotosocial_without_a_version_string_connects(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path
) -> None:
    async with FakeGoToSocial(profile=dataclasses.replace(GOTOSOCIAL, version="")) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        config = bot_config(synapse, bot_user, bot_password, tmp_path / "data")
        alice = await make_human("alice")
        async with run_bot(config):
            room = await open_dm(alice, bot_user)
            reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
            assert f"Connected as @alice@{gts.host}" in reply
            gts.notify("alice", "mention", "bob", status_text="no version, no problem")
            assert "no version, no problem" in await next_text(alice, room, bot_user)


async def test_a_limited_federation_mastodon_connects_and_relays(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path
) -> None:
    """Its instance documents answer 401 until signed in: still a Mastodon-API server."""
    async with FakeGoToSocial(profile=dataclasses.replace(MASTODON, limited_federation=True)) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        config = bot_config(synapse, bot_user, bot_password, tmp_path / "data")
        alice = await make_human("alice")
        async with run_bot(config):
            room = await open_dm(alice, bot_user)
            reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
            assert f"Connected as @alice@{gts.host}" in reply
            await alice_streams(gts, 1, "the stream on the streaming host")
            gts.notify("alice", "mention", "bob", status_text="limited but reachable")
            assert "limited but reachable" in await next_text(alice, room, bot_user)


@pytest.mark.parametrize("profile", [GOTOSOCIAL, MASTODON, AKKOMA, ICESHRIMP], ids=lambda p: p.name)
async def test_two_people_sharing_a_remote_account_keep_relaying_after_one_revokes(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path, profile: Profile
) -> None:
    """Mastodon and Akkoma hand both connections the same token: one revoke must not cut off the other."""
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        bot_user, bot_password = await new_bot_account(synapse)
        config = bot_config(synapse, bot_user, bot_password, tmp_path / "data")
        first, second = await make_human("first"), await make_human("second")
        async with run_bot(config):
            rooms = {}
            for human in (first, second):
                rooms[human.user_id] = room = await open_dm(human, bot_user)
                reply, _ = await connect_account(human, room, bot_user, gts, EMAIL, PASSWORD)
                assert f"Connected as @alice@{gts.host}" in reply
            await alice_streams(gts, 2, "both streams")
            reply = await say(first, rooms[first.user_id], bot_user, "!gts revoke")
            shared = "stays valid on the server because another connection"
            assert (shared in reply) if profile.reuses_tokens else reply.startswith("Revoked")
            await alice_streams(gts, 1, "the revoked connection's stream closed")
            gts.notify("alice", "mention", "bob", status_text="still here for the second")
            assert "still here for the second" in await next_text(second, rooms[second.user_id], bot_user)
            assert await first.no_more_messages(rooms[first.user_id], bot_user, wait=1.0)
