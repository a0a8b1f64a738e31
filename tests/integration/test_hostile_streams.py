"""What a hostile instance can put on the notification websocket, below and above the framing: invalid
UTF-8, binary frames, oversized and endless fragments, floods of frames and pings, odd close frames,
silence after the handshake, and frames whose JSON says the wrong thing.

Every input goes over a real loopback websocket to the fake GoToSocial's hostile profile. The stream
either skips what carries nothing, or ends with a FediverseError that names the instance and nothing the
instance sent, so the relay reconnects and catches up over REST (tests/integration/test_hostile_relay.py
shows the relay side: cursor, reconnect, other accounts)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from bot.errors import BadResponseError, FediverseError, InstanceUnreachableError
from bot.fediverse.instance import parse_instance
from bot.fediverse.models import Notification
from bot.fediverse.streaming import NotificationStream, StreamConnector, build_stream_connector
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.gotosocial.hostile import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    Hostile,
    ws_frame,
)
from tests.integration.fedi_support import settings
from tests.waiting import wait_until

LIMIT = 64 * 1024  # the frame limit in these tests: max_response_bytes of the test settings
DEADLOCK = 60.0  # bounds a hang only
NOTE = '{"stream":["user:notification"],"event":"notification","payload":%s}'


@pytest.fixture
async def evil() -> AsyncIterator[FakeGoToSocial]:
    # no pings of its own: the frame-budget tests count every frame the client receives
    async with FakeGoToSocial(hostile=True, ping_interval=3600.0) as fake:
        fake.add_user("alice")
        yield fake


def hostile_of(gts: FakeGoToSocial) -> Hostile:
    assert isinstance(gts.hostile, Hostile)
    return gts.hostile


def connector(**kwargs: float) -> StreamConnector:
    """A connector whose frame budget never refills (its clock stands still): what ends a flood is the
    number of frames, never how fast this machine reads them."""
    c = build_stream_connector(settings(), **kwargs)
    c.clock = lambda: 0.0
    return c


@asynccontextmanager
async def open_stream(
    gts: FakeGoToSocial, c: StreamConnector | None = None, *, registered: bool = True
) -> AsyncIterator[NotificationStream]:
    """A connected stream for alice, closed afterwards; `registered`: wait until the fake can push to it."""
    instance = parse_instance(gts.base_url, allow_http=True)
    async with (c or connector()).stream(instance, gts.issue_token("alice")) as stream:
        if registered:
            await wait_until(lambda: gts.open_streams("alice") == 1, what="the fake's side of the stream")
        yield stream


async def collect(stream: NotificationStream, until: Callable[[Notification], bool]) -> list[Notification]:
    """Notifications until one matches `until` (a positive marker sent after the input under test)."""
    got: list[Notification] = []
    async with asyncio.timeout(DEADLOCK):
        async for n in stream:
            got.append(n)
            if until(n):
                return got
    raise AssertionError("the stream ended before the marker")


async def ends_with(stream: NotificationStream) -> FediverseError:
    async with asyncio.timeout(DEADLOCK):
        try:
            async for n in stream:
                raise AssertionError(f"unexpected notification {n.id}")
        except FediverseError as exc:
            return exc
    raise AssertionError("the stream ended without an error")


def text_bytes(payload_json: bytes) -> bytes:
    """A notification frame's text as bytes, with `payload_json` as its payload (already JSON-encoded)."""
    return (NOTE % "%s").encode() % payload_json


def marker_frame(gts: FakeGoToSocial) -> dict[str, object]:
    return gts.notify("alice", "mention", "carol", status_text="marker")


# -- below the framing: bytes no text frame may hold, frames no server may send ---------------------------

INVALID_UTF8 = {
    "overlong": b"\xc0\xaf",  # "/" in two bytes
    "overlong-3": b"\xe0\x80\xaf",
    "surrogate": b"\xed\xa0\x80",  # U+D800 encoded as if it were a character
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",  # CESU-8
    "truncated": b"\xe2\x82",  # the first two bytes of the euro sign, then the quote
    "stray-continuation": b"\x80",
    "above-unicode": b"\xf4\x90\x80\x80",  # U+110000
    "ff": b"\xff",
}


@pytest.mark.parametrize("bad", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_a_text_frame_with_invalid_utf8_ends_the_stream(evil: FakeGoToSocial, bad: bytes) -> None:
    async with open_stream(evil) as stream:
        body = b'"{\\"id\\":\\"01X\\",\\"type\\":\\"mention\\",\\"note\\":\\"' + bad + b'\\"}"'
        hostile_of(evil).push_wire("alice", ws_frame(OP_TEXT, text_bytes(body)))
        error = await ends_with(stream)
    assert isinstance(error, InstanceUnreachableError)
    assert "lost" in str(error)


async def test_invalid_utf8_split_across_fragments_ends_the_stream(evil: FakeGoToSocial) -> None:
    """The euro sign cut between two fragments is valid; a sequence that stays cut is not."""
    async with open_stream(evil) as stream:
        good = NOTE.encode() % b'"{\\"event\\":\\"\xe2\x82'
        hostile = hostile_of(evil)
        hostile.push_wire("alice", ws_frame(OP_TEXT, good, fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, b'\xac\\"}"}'))  # completes the euro sign: valid
        hostile.push_wire("alice", ws_frame(OP_TEXT, b'{"event":"x","e":"\xe2', fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, b'\x82"}'))  # still valid
        hostile.push_wire("alice", ws_frame(OP_TEXT, b'{"event":"x","e":"\xe2', fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, b'"}'))  # the sequence never completes
        error = await ends_with(stream)
    assert isinstance(error, InstanceUnreachableError)


async def test_a_binary_frame_is_not_a_notification(evil: FakeGoToSocial) -> None:
    """Streaming sends text frames; a binary one (even valid JSON) is a broken stream: reconnect and catch
    up over REST rather than guess what it held."""
    async with open_stream(evil) as stream:
        body = json.dumps({"id": "01B", "type": "follow", "created_at": "2026-11-28T03:08:32.000Z"})
        hostile_of(evil).push_wire("alice", ws_frame(OP_BINARY, (NOTE % json.dumps(body)).encode()))
        error = await ends_with(stream)
    assert isinstance(error, BadResponseError)
    assert "malformed" in str(error)


async def test_fragments_that_add_up_past_the_frame_limit_end_the_stream(evil: FakeGoToSocial) -> None:
    async with open_stream(evil) as stream:
        hostile = hostile_of(evil)
        hostile.push_wire("alice", ws_frame(OP_TEXT, b" " * (LIMIT // 2), fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, b" " * (LIMIT // 2), fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, b"x", fin=False))  # one byte past the limit
        hostile.push_wire("alice", ws_frame(OP_CONT, b" " * 1024), count=1024)  # 1 MB more if read
        error = await ends_with(stream)
    assert isinstance(error, InstanceUnreachableError)


async def test_endless_empty_fragments_end_the_stream(evil: FakeGoToSocial) -> None:
    """Zero-byte continuation frames never reach the size limit; the frame budget caps their number (and
    websockets, at 4,096 fragments a message)."""
    async with open_stream(evil) as stream:
        hostile = hostile_of(evil)
        hostile.push_wire("alice", ws_frame(OP_TEXT, b"{", fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, b"", fin=False), count=100_000)
        error = await ends_with(stream)
    assert isinstance(error, BadResponseError)
    assert "too fast" in str(error)


async def test_a_message_of_exactly_the_frame_limit_is_read(evil: FakeGoToSocial) -> None:
    """The limit is inclusive: a frame of LIMIT bytes (here in three fragments) is a notification."""
    async with open_stream(evil) as stream:
        created = evil.notify("alice", "follow", "carol")
        head = (NOTE % json.dumps(json.dumps(created))).encode()
        frame = head[:-1] + b" " * (LIMIT - len(head)) + b"}"
        assert len(frame) == LIMIT
        # the fake's own frame for `created` is already queued: drain it first
        first = await collect(stream, lambda n: True)
        hostile = hostile_of(evil)
        hostile.push_wire("alice", ws_frame(OP_TEXT, frame[:100], fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, frame[100:-100], fin=False))
        hostile.push_wire("alice", ws_frame(OP_CONT, frame[-100:]))
        again = await collect(stream, lambda n: True)
        hostile.push_wire("alice", ws_frame(OP_TEXT, frame[:-1] + b" }"))  # one byte more
        error = await ends_with(stream)
    assert [n.id for n in first + again] == [created["id"], created["id"]]
    assert isinstance(error, InstanceUnreachableError)


# -- close frames and silence ---------------------------------------------------------------------------

CLOSES = {
    "normal": (1000).to_bytes(2, "big") + b"bye",
    "no-status": b"",
    "code-0": (0).to_bytes(2, "big"),
    "reserved-1004": (1004).to_bytes(2, "big"),
    "abnormal-1006": (1006).to_bytes(2, "big"),  # must never be sent
    "code-2999": (2999).to_bytes(2, "big"),
    "private-4999": (4999).to_bytes(2, "big") + b"private",
    "code-65535": (65535).to_bytes(2, "big"),
    "one-byte": b"\x03",
    "huge-reason": (1000).to_bytes(2, "big") + b"HOSTILE" * 10_000,  # > 125 bytes: no valid control frame
    "invalid-utf8-reason": (1000).to_bytes(2, "big") + b"HOSTILE \xed\xa0\x80 \xc0\xaf",
    "newline-reason": (4000).to_bytes(2, "big") + b"HOSTILE\nERROR forged log line",
}


@pytest.mark.parametrize("payload", CLOSES.values(), ids=CLOSES.keys())
async def test_odd_close_frames_end_the_stream_without_echoing_the_reason(
    evil: FakeGoToSocial, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_stream(evil) as stream:
        hostile_of(evil).push_wire("alice", ws_frame(OP_CLOSE, payload))
        error = await ends_with(stream)
    assert isinstance(error, InstanceUnreachableError)
    assert "HOSTILE" not in str(error)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("bot", "websockets"))]
    assert not [line for line in ours if "HOSTILE" in line]


async def test_a_half_open_stream_is_given_up_by_client_pings(evil: FakeGoToSocial) -> None:
    """Handshake (101), then nothing: no frame, no pong, no close reply."""
    hostile_of(evil).silence_streams()
    async with open_stream(evil, connector(ping_interval=0.2, ping_timeout=0.3), registered=False) as stream:
        error = await ends_with(stream)
    assert isinstance(error, InstanceUnreachableError)


# -- floods ---------------------------------------------------------------------------------------------


async def test_a_ping_flood_ends_the_stream(evil: FakeGoToSocial) -> None:
    """Pings as fast as the fake can write them (each one asks the bot for a pong): the connection's frame
    budget ends it; the pongs the bot owes never pile up unbounded."""
    async with open_stream(evil) as stream:
        hostile_of(evil).push_wire("alice", ws_frame(OP_PING, b"HOSTILE" * 17), count=2_000_000)
        error = await ends_with(stream)
    assert isinstance(error, BadResponseError)
    assert "too fast" in str(error)


async def test_pings_from_a_server_that_never_reads_the_pongs_end_the_stream(evil: FakeGoToSocial) -> None:
    """With no frame budget to speak of, the pongs the bot owes back up in its write buffer: past
    MAX_UNSENT_BYTES the connection is aborted instead of growing for ever."""
    c = connector()
    c.frame_burst = 10**12
    hostile = hostile_of(evil)
    hostile.stop_reading_streams()
    async with open_stream(evil, c) as stream:
        hostile.push_wire("alice", ws_frame(OP_PING, b"HOSTILE" * 17), count=10**9)
        error = await ends_with(stream)
    assert isinstance(error, BadResponseError)
    assert "stopped reading" in str(error)


async def test_the_frame_budget_counts_every_frame_to_the_last(evil: FakeGoToSocial) -> None:
    """With a budget of 50 frames: 48 ignored events, a ping and a notification make 50 and all is well;
    the 51st frame ends the stream."""
    c = connector()
    c.frame_burst = 50
    async with open_stream(evil, c) as stream:
        hostile = hostile_of(evil)
        hostile.push_wire("alice", ws_frame(OP_TEXT, b'{"event":"x"}'), count=48)
        hostile.push_wire("alice", ws_frame(OP_PING, b""))
        created = marker_frame(evil)
        (received,) = await collect(stream, lambda n: True)
        hostile.push_wire("alice", ws_frame(OP_PING, b""))
        error = await ends_with(stream)
    assert received.id == created["id"]
    assert isinstance(error, BadResponseError)
    assert "too fast" in str(error)


async def test_a_flood_of_tiny_frames_ends_the_stream(evil: FakeGoToSocial) -> None:
    async with open_stream(evil) as stream:
        hostile_of(evil).push_wire("alice", ws_frame(OP_TEXT, b'{"event":"x"}'), count=2_000_000)
        error = await ends_with(stream)
    assert isinstance(error, BadResponseError)
    assert "too fast" in str(error)
