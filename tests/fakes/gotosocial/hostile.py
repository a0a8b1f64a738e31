"""The hostile-instance profile: content and frames an attacker-run instance can send.

`FakeGoToSocial(hostile=True)` gives the fake a `Hostile` (as `gts.hostile`) that can:
- post statuses with hostile HTML (`HOSTILE_HTML`: deeply nested, huge, parser edge cases such as
  CDATA, unclosed tags, comments and entities, text hidden in svg/math, @room and matrix.to pills,
  right-to-left overrides);
- push raw frames into a user's open streams (`HOSTILE_FRAMES`: huge, `[[],[],…]`, not JSON, lone
  surrogates in JSON escapes, giant and malformed ids, wrong shapes), bypassing the fake's own checks;
- write bytes to those streams below the websocket framing (`push_wire`, `ws_frame`): text frames with
  invalid UTF-8, binary frames, fragments, pings, close frames with odd codes and reasons, floods;
- spoil the stream frame of the next notification while the REST list keeps it (`notify_mangled`);
- open streams and then go silent (`silence_streams`: no pongs, nothing sent), or never read what the
  client sends (`stop_reading_streams`);
- rewrite the bytes of a REST answer (`spoil_rest`: e.g. invalid UTF-8 in a notification list);
- store raw notifications that the REST list returns as they are (giant ids, wrong shapes);
- answer slowly (slow-loris: `slow(seconds)` delays every answer, below the bot's request timeout).

Every hostile notification says "HOSTILE" somewhere, so a test can tell them from the well-formed ones.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.fakes.gotosocial.core import go_json
from tests.fakes.gotosocial.state import RawFrames, StoredNotification

if TYPE_CHECKING:
    from tests.fakes.gotosocial.server import FakeGoToSocial

__all__ = ["HOSTILE_FRAMES", "HOSTILE_HTML", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_TEXT",
           "Hostile", "RawFrames", "ws_frame"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING = 0x0, 0x1, 0x2, 0x8, 0x9


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One server-to-client websocket frame (unmasked, RFC 6455 §5.2), whatever the payload holds: no
    check on UTF-8, control-frame sizes or close codes, so it can say what a real server never would."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload

HOSTILE_HTML: dict[str, str] = {
    "quadratic": "<p>HOSTILE</p>" + "<a" * 20_000,
    "quadratic-long": "<p>HOSTILE</p>" + "<a" * 80_000,
    "deep-divs": "<div>" * 60_000 + "HOSTILE deep",
    "deep-inline": "<b><i>" * 20_000 + "HOSTILE inline",
    "huge": "<p>HOSTILE " + "x" * 400_000 + "</p>",
    "cdata": "<p>HOSTILE<![ ]></p><![CDATA[<script>x</script>]]>",
    "unclosed": "<p>HOSTILE <b><i><table><tr><td><ul><li>unclosed <a href='https://e.example/'>link",
    "comments": "<!--" * 10_000 + "<p>HOSTILE</p><!-- never closed",
    "entities": "<p>HOSTILE &amp;" + "&#x202E;&#0;&#xD800;&#x110000;&bogus;&lt;" * 2_000 + "</p>",
    "hidden-text": "<p>HOSTILE shown<svg><text>svg-secret</text></svg><math>math-secret</math>"
    "<iframe>iframe-secret</iframe><object>object-secret</object></p>",
    "pings": '<p>HOSTILE @room <a href="https://matrix.to/#/@admin:example.org">admin</a></p>',
    "rtl": "<p>HOSTILE \u202egnp.exe \u2066isolated\u2069</p>",
}

ACCOUNT = {
    "id": "01HOSTILEACCOUNT",
    "username": "mallory",
    "acct": "mallory",
    "url": None,
    "display_name": "HOSTILE \u202e@room\u202c",
}


def _frame(payload: str, *, event: str = "notification") -> str:
    return json.dumps({"stream": ["user:notification"], "event": event, "payload": payload})


def _notification(n_id: object, **extra: Any) -> dict[str, Any]:
    created = "2026-11-28T03:08:32.000Z"
    return {"id": n_id, "type": "mention", "created_at": created, "account": ACCOUNT, **extra}


HOSTILE_FRAMES: dict[str, str] = {
    "huge": _frame(json.dumps(_notification("01HOSTILEHUGE", note="x" * 400_000))),
    "empty-lists": _frame(json.dumps(_notification("01HOSTILELISTS", x=[[] for _ in range(400_000)]))),
    "lists-outside": json.dumps({"event": "notification", "payload": "[" + ",".join(["[]"] * 300_000) + "]"}),
    "not-json": "HOSTILE {{{ not json",
    "payload-not-json": _frame("HOSTILE {"),
    "lone-surrogate-id": _frame(json.dumps(_notification("\ud800HOSTILE"))),
    "lone-surrogate-text": _frame(json.dumps(_notification("01HOSTILESURROGATE", status={
        "id": "01S", "content": "<p>HOSTILE \ud800\udfff\ud800</p>"}))),
    "giant-id": _frame(json.dumps(_notification("9" * 5_000))),
    "giant-number-id": _frame('{"id": ' + "9" * 5_000 + ', "type": "mention"}'),
    "deep-json": _frame("[" * 100_000 + "]" * 100_000),
    "wrong-shape": _frame(json.dumps({"id": "01HOSTILESHAPE", "type": ["mention"], "account": "HOSTILE"})),
    "other-event": _frame("HOSTILE", event="delete"),
}


class Hostile:
    """What a hostile instance does to the users of this fake (see the module docstring)."""

    def __init__(self, gts: FakeGoToSocial) -> None:
        self._gts = gts

    def post(self, username: str, name: str, *, from_username: str = "mallory") -> dict[str, Any]:
        """A mention of `username` whose status HTML is `HOSTILE_HTML[name]` (stored and streamed)."""
        return self._gts.notify(username, "mention", from_username, status_html=HOSTILE_HTML[name])

    def push_frame(self, username: str, frame: str) -> int:
        """Put `frame` as it is into the user's open streams; returns how many streams got it."""
        state = self._gts.state
        user_id = state.users[username].user_id
        conns = [c for c in state.streams if c.user_id == user_id]
        for conn in conns:
            conn.queue.put_nowait(frame)
        return len(conns)

    def push_wire(self, username: str, data: bytes, *, count: int = 1) -> int:
        """Write `data` (`count` times) to the user's open streams below the framing (see `ws_frame`), after
        whatever is queued there; written as fast as the client reads. Returns how many streams got it."""
        state = self._gts.state
        user_id = state.users[username].user_id
        conns = [c for c in state.streams if c.user_id == user_id]
        for conn in conns:
            conn.queue.put_nowait(RawFrames(data, count))
        return len(conns)

    def notify_mangled(
        self, username: str, mangle: Callable[[str], str | RawFrames], *, from_username: str = "carol"
    ) -> dict[str, Any]:
        """A well-formed mention, stored as usual (REST lists it), whose stream frame is `mangle(frame)`."""
        faults = self._gts.state.faults
        faults.mangle_stream_frame = mangle
        try:
            return self._gts.notify(username, "mention", from_username, status_text="HOSTILE mangled frame")
        finally:
            faults.mangle_stream_frame = None

    def spoil_rest(self, path: str, old: bytes, new: bytes) -> None:
        """Every answer at `path` has `old` replaced by `new` in its raw bytes (after JSON encoding)."""
        self._gts.state.faults.mangle_body[path] = lambda body: body.replace(old, new)

    def stop_reading_streams(self, unread: bool = True) -> None:
        """Streams opened from now on never read from the client (its pongs back up on its side)."""
        self._gts.state.faults.stream_unread = unread

    def silence_streams(self, silent: bool = True) -> None:
        """Streams opened from now on complete the handshake, then neither send nor answer anything."""
        self._gts.state.faults.stream_silent = silent

    def store_raw(self, username: str, body: dict[str, Any]) -> None:
        """A notification the REST list returns exactly as given (any id, any Unicode)."""
        state = self._gts.state
        user_id = state.users[username].user_id
        state.notifications.append(StoredNotification(state.new_id(), user_id, "mention", body))

    def slow(self, seconds: float) -> None:
        """Answer every request `seconds` late (0: on time again)."""
        self._gts.state.faults.delay = seconds


def frame_for(body: dict[str, Any]) -> str:
    """A streaming frame carrying `body` as the fake would send it."""
    return _frame(go_json(body))
