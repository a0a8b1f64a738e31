"""Where the bot opens a stream, given what the instance advertises (pure)."""

from __future__ import annotations

import pytest

from bot.fediverse.instance import InstanceRef
from bot.fediverse.stream_frames import StreamErrorFrame, parse_stream_frame
from bot.fediverse.streaming import stream_endpoint

HTTPS = InstanceRef("https", "social.example")
HTTP_LOOPBACK = InstanceRef("http", "127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("instance", "advertised", "expected"),
    [
        (HTTPS, None, HTTPS),
        (HTTPS, "", HTTPS),
        (HTTPS, "wss://social.example", HTTPS),
        (HTTPS, "wss://streaming.social.example", InstanceRef("https", "streaming.social.example")),
        (HTTPS, "wss://stream.example:4000/", InstanceRef("https", "stream.example", 4000)),
        # an https instance never gets a plain-text stream, whatever it advertises
        (HTTPS, "ws://streaming.social.example", InstanceRef("https", "streaming.social.example")),
        # GoToSocial says wss:// even over plain http: on the instance's own host its scheme wins
        (HTTP_LOOPBACK, "wss://127.0.0.1:8080", HTTP_LOOPBACK),
        (HTTP_LOOPBACK, "ws://127.0.0.1:9090", InstanceRef("http", "127.0.0.1", 9090)),
        (HTTP_LOOPBACK, "wss://stream.example", InstanceRef("https", "stream.example")),
        (HTTPS, "wss://STREAM.Example.", InstanceRef("https", "stream.example")),
        # unusable: the instance itself
        (HTTPS, "ftp://stream.example", HTTPS),
        (HTTPS, "wss://", HTTPS),
        (HTTPS, "wss://user:pw@stream.example", HTTPS),
        (HTTPS, "wss://stream.example:99999", HTTPS),
        (HTTPS, "not a url", HTTPS),
    ],
)
def test_stream_endpoint(instance: InstanceRef, advertised: str | None, expected: InstanceRef) -> None:
    assert stream_endpoint(instance, advertised) == expected


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        ('{"error":"Access token does not have the required scopes","status":401}', 401),
        ('{"error":"Error parsing stream"}', 0),
        ('{"error":"x","status":"401"}', 0),
        ('{"error":"x","status":99999}', 0),
    ],
)
def test_an_error_frame_without_event_is_recognised(frame: str, status: int) -> None:
    assert parse_stream_frame(frame) == StreamErrorFrame(status)


def test_a_frame_with_an_event_is_no_error_frame() -> None:
    assert parse_stream_frame('{"event":"delete","payload":"1","error":"x"}') is None
