"""The relay against a hostile notification stream: whatever alice's instance puts on her websocket, her
stream reconnects (or falls back to polling) with backoff, her cursor never moves past a notification
that was not relayed, nothing secret reaches the log, and bob's account on another instance keeps
relaying meanwhile. tests/integration/test_hostile_streams.py shows the stream side of each input."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.store.records import AccountRecord
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.gotosocial.hostile import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    Hostile,
    RawFrames,
    ws_frame,
)
from tests.integration.relay_support import Harness, cursor_is
from tests.waiting import wait_until

LONG = 120.0  # bounds a failure on a loaded machine; not a performance figure
ENDLESS = 10**9  # frames: more than any test could wait for, unless the bot ends the flood
INVALID_UTF8 = b"\xed\xa0\x80 \xc0\xaf \xe2\x82"  # a surrogate, an overlong "/", a truncated sequence


def _as_wire(opcode: int, mangle: Callable[[bytes], bytes] = lambda b: b) -> Callable[[str], RawFrames]:
    return lambda frame: RawFrames(ws_frame(opcode, mangle(frame.encode())))


def _fragments_past_limit(frame: str) -> RawFrames:
    """The frame's text as a fragmented message that keeps going past the 64 KiB frame limit."""
    head = ws_frame(OP_TEXT, frame.encode(), fin=False)
    return RawFrames(head + ws_frame(OP_CONT, b" " * 40_000, fin=False) * 2 + ws_frame(OP_CONT, b"}"))


DEEP = "[" * 50_000 + "]" * 50_000

# Each spoils the frame of one notification the REST list still holds.
SPOILED: dict[str, Callable[[str], str | RawFrames]] = {
    "payload-not-json": lambda f: f.replace('"payload":"', '"payload":"HOSTILE', 1),
    "payload-not-a-string": lambda f: f.replace('"payload":"', '"payload":{"x":"HOSTILE"},"p":"', 1),
    "payload-wrong-shape": lambda f: f.replace('\\"type\\":\\"mention\\"', '\\"type\\":[\\"HOSTILE\\"]', 1),
    "payload-nested-deeply": lambda f: f.replace('"payload":"', '"payload":"' + DEEP, 1),
    "payload-huge": lambda f: f.replace('"payload":"', '"payload":"' + "HOSTILE " * 20_000, 1),  # > 64 KiB
    "event-not-a-string": lambda f: f.replace('"event":"notification"', '"event":["notification"]', 1),
    "text-frame-invalid-utf8": _as_wire(OP_TEXT, lambda b: b.replace(b"HOSTILE", b"HOSTILE" + INVALID_UTF8)),
    "binary-frame": _as_wire(OP_BINARY),
    "fragments-past-the-limit": _fragments_past_limit,
}


@dataclass
class Scene:
    h: Harness
    evil: FakeGoToSocial
    good: FakeGoToSocial
    hostile: Hostile
    alice: AccountRecord
    bob: AccountRecord


async def _relayed_once(h: Harness, account: AccountRecord, body: dict[str, Any], text: str) -> None:
    await wait_until(lambda: cursor_is(h, account.id, body["id"]), timeout=LONG, what=f"{text} committed")
    assert sum(text in b for b in h.sender.bodies()) == 1


def bot_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the bot (and the websockets library under it) logged, every level; not the fakes' own logs."""
    ours = [r for r in caplog.records if r.name.startswith(("bot", "websockets"))]
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)


@pytest.fixture
async def scene(h: Harness, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    h.connector.clock = lambda: 0.0  # the frame budget never refills: a flood ends by count, not by speed
    async with FakeGoToSocial(hostile=True) as evil, FakeGoToSocial() as good:
        assert isinstance(evil.hostile, Hostile)
        evil.add_user("alice")
        good.add_user("bob")
        alice = await h.add_account(evil, "alice", cursor=evil.notify("alice", "follow", "zed")["id"])
        bob = await h.add_account(good, "bob", cursor=good.notify("bob", "follow", "zed")["id"])
        await h.manager().start()
        await wait_until(lambda: evil.open_streams("alice") == 1 and good.open_streams("bob") == 1)
        yield Scene(h, evil, good, evil.hostile, alice, bob)


async def _after_the_attack(s: Scene, caplog: pytest.LogCaptureFixture) -> None:
    """Both accounts relay what comes next, exactly once, alice's over a stream opened again."""
    bob_during = s.good.notify("bob", "mention", "dave", status_text="bob during")
    await _relayed_once(s.h, s.bob, bob_during, "bob during")
    await wait_until(lambda: s.evil.open_streams("alice") == 1, timeout=LONG, what="alice's stream again")
    after = s.evil.notify("alice", "mention", "carol", status_text="alice after")
    await _relayed_once(s.h, s.alice, after, "alice after")
    bob_after = s.good.notify("bob", "mention", "dave", status_text="bob after")
    await _relayed_once(s.h, s.bob, bob_after, "bob after")
    log = bot_log(caplog)
    assert "stream ended" in log  # (the log is captured at every level)
    for account in (s.alice, s.bob):
        assert account.token not in log
    assert "HOSTILE" not in log  # nothing the instance wrote is echoed into the log


@pytest.mark.parametrize("spoil", SPOILED.values(), ids=SPOILED.keys())
async def test_a_spoiled_frame_never_moves_the_cursor_past_its_notification(
    scene: Scene, spoil: Callable[[str], str | RawFrames], caplog: pytest.LogCaptureFixture
) -> None:
    """A notification whose frame is spoiled, then a good one on the same connection: the relay must not
    take the good one's id as its cursor and lose the first; it reconnects and catches up over REST."""
    s = scene
    spoiled = s.hostile.notify_mangled("alice", spoil)
    behind = s.evil.notify("alice", "mention", "carol", status_text="right behind")
    await _relayed_once(s.h, s.alice, behind, "right behind")
    assert sum("HOSTILE mangled frame" in b for b in s.h.sender.bodies()) == 1
    assert spoiled["id"] < behind["id"]
    await _after_the_attack(s, caplog)


def _close(payload: bytes) -> bytes:
    return ws_frame(OP_CLOSE, payload)


WIRE: dict[str, tuple[bytes, int]] = {
    "close-invalid-utf8-reason": (_close((1000).to_bytes(2, "big") + b"HOSTILE" + INVALID_UTF8), 1),
    "close-huge-reason": (_close((1000).to_bytes(2, "big") + b"HOSTILE" * 5_000), 1),
    "close-odd-code": (_close((4999).to_bytes(2, "big") + b"HOSTILE\nforged log line"), 1),
    "ping-flood": (ws_frame(OP_PING, b"HOSTILE"), ENDLESS),
    "tiny-frame-flood": (ws_frame(OP_TEXT, b'{"event":"HOSTILE"}'), ENDLESS),
    "endless-empty-fragments": (ws_frame(OP_TEXT, b"{", fin=False) + ws_frame(OP_CONT, b"", fin=False), 1),
}


@pytest.mark.parametrize(("data", "count"), WIRE.values(), ids=WIRE.keys())
async def test_what_ends_a_stream_costs_alice_a_reconnect_and_nothing_else(
    scene: Scene, data: bytes, count: int, caplog: pytest.LogCaptureFixture
) -> None:
    s = scene
    assert s.hostile.push_wire("alice", data, count=count) == 1
    if data.endswith(ws_frame(OP_CONT, b"", fin=False)):
        s.hostile.push_wire("alice", ws_frame(OP_CONT, b"", fin=False), count=ENDLESS)
    missed = s.evil.notify("alice", "mention", "carol", status_text="queued behind")
    await _relayed_once(s.h, s.alice, missed, "queued behind")
    await _after_the_attack(s, caplog)


async def test_a_half_open_stream_is_given_up_and_the_relay_polls_meanwhile(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    s = scene
    s.hostile.silence_streams()
    assert s.evil.drop_streams() == 1  # alice's next streams open, then say nothing at all
    missed = s.evil.notify("alice", "mention", "carol", status_text="while silent")
    await _relayed_once(s.h, s.alice, missed, "while silent")
    s.hostile.silence_streams(False)
    await _after_the_attack(s, caplog)


async def test_invalid_utf8_in_the_stream_and_in_rest_costs_only_the_bad_bytes(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    """The broken bytes are in the REST answer too (a server that stores them): the stream ends (1007),
    and the catch-up reads the page with U+FFFD in their place instead of failing it for ever."""
    s = scene
    s.hostile.spoil_rest("/api/v1/notifications", b"HOSTILE mangled", b"HOSTILE" + INVALID_UTF8 + b" mangled")
    spoiled = s.hostile.notify_mangled("alice", SPOILED["text-frame-invalid-utf8"])
    behind = s.evil.notify("alice", "mention", "carol", status_text="right behind")
    await _relayed_once(s.h, s.alice, behind, "right behind")
    (body,) = [b for b in s.h.sender.bodies() if "mangled frame" in b]
    assert "\ufffd" in body
    assert spoiled["id"] < behind["id"]
    await _after_the_attack(s, caplog)
