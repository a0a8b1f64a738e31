"""Pure: what one streaming frame says (a notification, an error frame, or nothing), with its bounds, and
how many frames a connection may send (`FrameBudget`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bot.fediverse.models import Notification, ShapeError, parse_notification

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_FRAME_CONTAINERS",
    "FrameBudget",
    "StreamErrorFrame",
    "parse_stream_frame",
]

MAX_FRAME_BYTES = 256 * 1024
"""A larger streaming frame closes the connection (websockets answers 1009); the relay reconnects and
fetches over REST whatever it carried. A real notification frame is a few kilobytes."""
MAX_FRAME_CONTAINERS = 4_096
"""JSON objects and arrays a frame may open (counted before parsing, payload included): a frame of
`[[],[],...]` would otherwise cost ~20 bytes of memory per byte of text while it is parsed."""


@dataclass(frozen=True)
class StreamErrorFrame:
    """`{"error": "…", "status": 401}` without `event`: the server will not send this stream."""

    status: int


def parse_stream_frame(message: str | bytes) -> Notification | StreamErrorFrame | None:
    """A streaming frame → the Notification it carries, a StreamErrorFrame, or None for other events.
    ShapeError if malformed."""
    if isinstance(message, bytes):
        containers = message.count(b"[") + message.count(b"{")
    else:
        containers = message.count("[") + message.count("{")
    if containers > MAX_FRAME_CONTAINERS:
        raise ShapeError("frame has too many JSON objects or arrays")
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        raise ShapeError("frame is not JSON") from None
    if not isinstance(frame, dict):
        raise ShapeError("frame is not a JSON object")
    if "event" not in frame and "error" in frame:
        status = frame.get("status")
        return StreamErrorFrame(status if isinstance(status, int) and 100 <= status <= 599 else 0)
    event = frame.get("event")
    if not isinstance(event, str):
        raise ShapeError("frame.event is missing or not a string")
    if event != "notification":
        return None  # `update`, `delete`, `status.update`, … and names we do not know: nothing to relay
    payload = frame.get("payload")
    if not isinstance(payload, str):
        raise ShapeError("frame.payload is not a string")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise ShapeError("frame.payload is not JSON") from None
    return parse_notification(data)


class FrameBudget:
    """A token bucket over the frames one connection receives (control frames, fragments and ignored
    events included): `burst` at once, then `rate` a second. A real notification stream sends a few frames
    a minute; a connection that spends the bucket is a flood and is closed, so the work an instance can
    cause per account is bounded whatever it sends."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def spend(self, frames: int = 1) -> bool:
        """Take `frames` from the bucket; False once it is overdrawn (and from then on)."""
        now = self._clock()
        if self._tokens >= 0:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= frames
        return self._tokens >= 0
