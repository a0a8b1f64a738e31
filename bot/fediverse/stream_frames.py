"""Pure: what one streaming frame says (a notification, an error frame, or nothing), with its bounds."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.fediverse.models import Notification, ShapeError, parse_notification

__all__ = ["MAX_FRAME_BYTES", "MAX_FRAME_CONTAINERS", "StreamErrorFrame", "parse_stream_frame"]

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
    if frame.get("event") != "notification":
        return None
    payload = frame.get("payload")
    if not isinstance(payload, str):
        raise ShapeError("frame.payload is not a string")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise ShapeError("frame.payload is not JSON") from None
    return parse_notification(data)
