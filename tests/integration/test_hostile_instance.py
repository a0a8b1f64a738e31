"""A connected account on a hostile instance (the fake's hostile profile) cannot stall the bot, hide
well-formed notifications, ping anyone, or make the plain and HTML bodies disagree; another user's
commands are answered meanwhile (issue 10)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.dm_registry import DmDirectory
from bot.fediverse.streaming import build_stream_connector
from bot.relay.manager import RelayManager
from bot.router import Router
from bot.store.keyring import KeyRing
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.gotosocial.hostile import HOSTILE_FRAMES, HOSTILE_HTML, Hostile
from tests.fakes.matrix import RecordingMatrix
from tests.integration.fedi_support import fedi_client, settings
from tests.integration.relay_support import FAST, Harness, Notified, cursor_is
from tests.integration.router_support import Rooms, command_side, message
from tests.waiting import wait_until

BOB, BOB_DM = "@bob:example.org", "!bobdm:example.org"
LONG = 120.0  # an upper bound for a loaded machine, not a performance figure
RESPONSE_BYTES = 1_048_576  # the production default: hostile posts of a few hundred kB must fit a page


@pytest.fixture
async def h(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> AsyncIterator[Harness]:
    async with fedi_client(max_response_bytes=RESPONSE_BYTES, request_timeout=10.0) as client:
        connector = build_stream_connector(
            settings(max_response_bytes=RESPONSE_BYTES), ping_interval=5.0, ping_timeout=5.0
        )
        harness = Harness(sessions, keyring, client, connector, RecordingMatrix(), Notified())
        try:
            yield harness
        finally:
            for manager in harness.managers:
                await manager.stop()


async def test_a_hostile_instance_cannot_stall_the_bot_or_hide_good_notifications(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeGoToSocial(hostile=True) as evil, FakeGoToSocial() as good:
        hostile = evil.hostile
        assert isinstance(hostile, Hostile)
        evil.add_user("alice")
        good.add_user("bob")
        alice = await h.add_account(evil, "alice", cursor=evil.notify("alice", "follow", "zed")["id"])
        bob = await h.add_account(
            good, "bob", cursor=good.notify("bob", "follow", "zed")["id"], dm_room=BOB_DM
        )
        # Two per page, so that each page of hostile posts stays within the response limit.
        manager = h.manager(tuning=dataclasses.replace(FAST, page_limit=2))
        matrix = RecordingMatrix()
        router = _router(h, manager, matrix)
        await manager.start()
        await wait_until(lambda: evil.open_streams("alice") == 1 and good.open_streams("bob") == 1)

        alice_good, bob_good = [], []
        for i, name in enumerate(HOSTILE_HTML):
            hostile.post("alice", name)
            for frame in HOSTILE_FRAMES.values():
                hostile.push_frame("alice", frame)
            alice_good.append(evil.notify("alice", "mention", "carol", status_text=f"well-formed {i}"))
            bob_good.append(good.notify("bob", "mention", "dave", status_text=f"bob {i}"))
        hostile.slow(1.0)  # and from now on it answers slowly too
        last_bob = good.notify("bob", "mention", "dave", status_text="bob last")

        # Bob's commands go through the real router and are answered while alice's instance is still
        # being worked through: her last well-formed notification, behind every hostile post and frame
        # and paged over REST at one slow answer a second, has not been relayed yet.
        await router.handle(message(BOB, BOB_DM, "!gts help", event="$help"))
        await router.handle(message(BOB, BOB_DM, "!gts status", event="$status"))
        await wait_until(lambda: len(matrix.messages()) == 2, timeout=LONG, what="answers to bob's commands")
        assert not any(f"well-formed {len(HOSTILE_HTML) - 1}" in body for body in h.sender.bodies())
        assert not await cursor_is(h, alice.id, alice_good[-1]["id"])
        (help_room, help_text), (status_room, status_text) = matrix.messages()
        assert help_room == status_room == BOB_DM
        assert "!gts status" in help_text
        assert "Your accounts:" in status_text
        assert "@bob@" in status_text
        assert "relaying" in status_text

        # The other user's notifications keep arriving while alice's instance does all that.
        await wait_until(
            lambda: cursor_is(h, bob.id, last_bob["id"]), timeout=LONG, what="bob's notifications"
        )
        await wait_until(
            lambda: cursor_is(h, alice.id, alice_good[-1]["id"]),
            timeout=LONG,
            what="alice's well-formed notifications",
        )
        hostile.slow(0.0)
        await router.aclose(grace=5)

    bodies = h.sender.bodies()
    text = "\n".join(bodies)
    for i in range(len(HOSTILE_HTML)):
        assert len(re.findall(rf"\bwell-formed {i}\b", text)) == 1
        assert len(re.findall(rf"\bbob {i}\b", text)) == 1
    assert "bob last" in text
    # Each hostile post arrived once (text cut to the limits or hidden in a comment is not shown).
    assert text.count("mallory (@mallory@") == len(HOSTILE_HTML)
    # Plain and HTML bodies agree and nothing pings: hidden text is in neither, no @room, no pill.
    for event in h.sender.events:
        for body in (event.body, event.html):
            assert "secret" not in body
            assert not re.search(r"@room\b", body)
            assert "matrix.to" not in body
            assert "\u202e" not in event.body.split("\n")[0]  # not in the header line (names)
    # The malformed frames were logged once per connection, not once per frame.
    malformed = [r for r in caplog.records if "malformed streaming frame" in r.getMessage()]
    assert len(malformed) < len(HOSTILE_FRAMES) * len(HOSTILE_HTML) // 4


def _router(h: Harness, manager: RelayManager, matrix: RecordingMatrix) -> Router:
    """The command router as the bot wires it, with a recording Matrix side; bob's DM is private."""
    return command_side(
        h.sessions,
        h.keyring,
        h.client,
        matrix=matrix,
        dms=DmDirectory(h.sessions, Rooms({(BOB_DM, BOB)})),
        relay=manager,
        commands_per_minute=20,
        fediverse=settings(max_response_bytes=RESPONSE_BYTES),
        allowed_users=("@*:example.org",),
    ).router
