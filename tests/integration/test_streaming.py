"""The notification websocket: delivery from the fake GoToSocial, handshake errors, ignored events, dead
connections, clean close, and the address guard on the websocket path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import WSMsgType, web

from bot.errors import (
    BadResponseError,
    ForbiddenAddressError,
    InstanceUnreachableError,
    StreamRefusedError,
)
from bot.fediverse.instance import parse_instance
from bot.fediverse.models import AppRegistration, ShapeError
from bot.fediverse.streaming import (
    NotificationStream,
    StreamConnector,
    build_stream_connector,
    parse_stream_frame,
)
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.fedi_support import (
    StubResolver,
    connection_counter,
    fedi_client,
    loopback,
    serve,
    settings,
)
from tests.waiting import wait_until

ACCOUNT = {"id": "01A", "username": "bob", "acct": "bob@remote.example", "url": None, "display_name": "Bob"}
NOTIFICATION = {"id": "01N", "type": "follow", "created_at": "2026-11-28T03:08:32.000Z", "account": ACCOUNT}


def frame(event: str, payload: object) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return json.dumps({"stream": ["user:notification"], "event": event, "payload": text})


def connector(**kwargs: float) -> StreamConnector:
    return build_stream_connector(settings(), **kwargs)


DEADLOCK = 60.0  # bounds a hang only: a stream answers within milliseconds when it works


@pytest.fixture
async def gts() -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial() as fake:
        fake.add_user("alice")
        yield fake


async def next_notification(stream: NotificationStream) -> object:
    async with asyncio.timeout(DEADLOCK):
        async for notification in stream:
            return notification
    raise AssertionError("stream ended")


async def drain(stream: NotificationStream) -> None:
    async with asyncio.timeout(DEADLOCK):
        async for _ in stream:
            pass


# -- pure frame parsing ------------------------------------------------------------------------------------


def test_parse_frame() -> None:
    parsed = parse_stream_frame(frame("notification", NOTIFICATION))
    assert parsed is not None
    assert parsed.id == "01N"
    assert parsed.account.acct == "bob@remote.example"
    assert parse_stream_frame(frame("update", {"id": "S"})) is None
    assert parse_stream_frame(frame("delete", "01S")) is None
    assert parse_stream_frame(json.dumps({"event": "filters_changed", "payload": ""})) is None


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        frame("notification", "not json"),
        json.dumps({"event": "notification", "payload": {}}),
        frame("notification", {"id": "x"}),
    ],
)
def test_parse_bad_frame(raw: str) -> None:
    with pytest.raises(ShapeError):
        parse_stream_frame(raw)


# -- against the fake GoToSocial ----------------------------------------------------------------------------


async def test_stream_delivers_a_notification_created_on_the_fake(gts: FakeGoToSocial) -> None:
    token = gts.issue_token("alice", "read")
    async with connector().stream(parse_instance(gts.base_url, allow_http=True), token) as stream:
        assert gts.open_streams("alice") == 1
        created = gts.notify("alice", "mention", "bob@remote.example", status_text="hello")
        received = await next_notification(stream)
    assert getattr(received, "id", None) == created["id"]
    assert getattr(received, "type", None) == "mention"
    await wait_until(lambda: gts.open_streams("alice") == 0, what="the fake noticing the close")


async def test_bad_token_is_refused_at_handshake(gts: FakeGoToSocial) -> None:
    """A refusal, not a verdict on the token: the relay asks REST whether the token is dead."""
    stream = connector().stream(parse_instance(gts.base_url, allow_http=True), "NOT-A-TOKEN")
    with pytest.raises(StreamRefusedError) as refused:
        await stream.connect()
    assert (refused.value.status, refused.value.in_stream) == (401, False)


async def test_granular_scope_is_not_enough_for_streaming(gts: FakeGoToSocial) -> None:
    token = gts.issue_token("alice", "read:notifications read:accounts")
    stream = connector().stream(parse_instance(gts.base_url, allow_http=True), token)
    with pytest.raises(StreamRefusedError, match="may not read") as refused:
        await stream.connect()
    assert refused.value.status == 403


async def test_streaming_disabled(gts: FakeGoToSocial) -> None:
    gts.faults.streaming_enabled = False
    stream = connector().stream(parse_instance(gts.base_url, allow_http=True), gts.issue_token("alice"))
    with pytest.raises(BadResponseError, match="HTTP 404"):
        await stream.connect()


async def test_revoked_token_keeps_streaming_until_we_close(gts: FakeGoToSocial) -> None:
    """GoToSocial checks the token only at connect; whoever revokes must close the stream."""
    instance = parse_instance(gts.base_url, allow_http=True)
    async with fedi_client() as client:
        app = await client.register_app(instance, ["read"], client_name="gts-bot")
        token = gts.issue_token("alice", "read", client_id=app.client_id)
        stream = connector().stream(instance, token)
        await stream.connect()
        await client.revoke(instance, AppRegistration(app.client_id, app.client_secret), token)
    gts.notify("alice", "follow", "carol@remote.example")
    assert await next_notification(stream) is not None  # still delivering after the revoke

    async def consume() -> list[object]:
        return [n async for n in stream]

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await stream.aclose()  # from another task: iteration ends quietly
    async with asyncio.timeout(DEADLOCK):
        assert await consumer == []
    assert stream.closed
    await stream.aclose()  # idempotent


async def test_server_dropping_the_connection_raises(gts: FakeGoToSocial) -> None:
    async with connector().stream(
        parse_instance(gts.base_url, allow_http=True), gts.issue_token("alice")
    ) as s:
        await wait_until(lambda: gts.open_streams("alice") == 1, what="the fake's side of the stream")
        assert gts.drop_streams() == 1
        with pytest.raises(InstanceUnreachableError, match=r"lost|closed"):
            await drain(s)


# -- scripted websocket servers -----------------------------------------------------------------------------


@asynccontextmanager
async def ws_server(
    script: list[str], *, autoping: bool = True, hold: float = 5.0, seen: list[web.Request] | None = None
) -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request)
        ws = web.WebSocketResponse(autoping=autoping)
        await ws.prepare(request)
        for message in script:
            await ws.send_str(message)
        try:
            async with asyncio.timeout(hold):
                async for msg in ws:
                    if msg.type == WSMsgType.CLOSE:
                        break
        except TimeoutError:
            pass
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/streaming", handler)
    async with serve(app) as port:
        yield port


async def test_token_goes_in_the_protocol_header_not_the_url() -> None:
    seen: list[web.Request] = []
    async with (
        ws_server([frame("notification", NOTIFICATION)], seen=seen) as port,
        connector().stream(loopback(port), "SECRET-TOKEN") as stream,
    ):
        await next_notification(stream)
    (request,) = seen
    assert request.headers["Sec-WebSocket-Protocol"] == "SECRET-TOKEN"
    assert "Authorization" not in request.headers
    assert "SECRET-TOKEN" not in request.path_qs
    assert request.query["stream"] == "user:notification"


async def test_a_token_that_is_no_header_token_goes_in_authorization() -> None:
    seen: list[web.Request] = []
    async with (
        ws_server([frame("notification", NOTIFICATION)], seen=seen) as port,
        connector().stream(loopback(port), "TOKEN/WITH=SLASH") as stream,
    ):
        await next_notification(stream)
    (request,) = seen
    assert request.headers["Authorization"] == "Bearer TOKEN/WITH=SLASH"
    assert "Sec-WebSocket-Protocol" not in request.headers


async def test_other_events_are_skipped() -> None:
    script = [
        frame("update", {"id": "S1"}),
        frame("delete", "S1"),
        frame("status.update", {"id": "S1"}),
        frame("HOSTILE-unknown-event", {"id": "01X"}),
        json.dumps({"stream": 5, "event": "filters_changed"}),
        json.dumps({"stream": {"HOSTILE": 1}, "event": "notification", "payload": json.dumps(NOTIFICATION)}),
    ]
    async with ws_server(script) as port, connector().stream(loopback(port), "T") as stream:
        received = await next_notification(stream)
    assert getattr(received, "id", None) == "01N"  # the `stream` field is not read: its type does not matter


@pytest.mark.parametrize("bad", ["garbage", frame("notification", "{broken"), json.dumps({"payload": "x"})])
async def test_a_malformed_frame_ends_the_stream_before_what_follows_it(bad: str) -> None:
    """It may have been a notification: the relay must catch up over REST from before it, so the stream
    ends there rather than hand over the next notification (whose id would move the cursor past it)."""
    async with (
        ws_server([bad, frame("notification", NOTIFICATION)]) as port,
        connector().stream(loopback(port), "T") as stream,
    ):
        with pytest.raises(BadResponseError, match="malformed streaming frame"):
            await next_notification(stream)


async def test_a_dead_connection_is_detected_by_client_pings() -> None:
    """The server never answers pings (autoping off, and it does not read): the client gives up."""
    async with (
        ws_server([], autoping=False, hold=10.0) as port,
        connector(ping_interval=0.2, ping_timeout=0.3).stream(loopback(port), "T") as stream,
    ):
        with pytest.raises(InstanceUnreachableError):
            await drain(stream)


async def test_oversized_message_ends_the_stream() -> None:
    huge = frame("notification", {**NOTIFICATION, "pad": "x" * (200 * 1024)})
    # the message cap is max_response_bytes, 64 KiB in the test settings
    async with ws_server([huge]) as port, connector().stream(loopback(port), "T") as stream:
        with pytest.raises(InstanceUnreachableError):
            await drain(stream)


async def test_websocket_goes_through_the_address_guard() -> None:
    async with connection_counter() as counter:
        resolver = StubResolver({"evil.example": ["127.0.0.1"]})
        guarded = build_stream_connector(settings(allow_private_addresses=False), resolver)
        instance = parse_instance(f"http://evil.example:{counter.port}", allow_http=True)
        with pytest.raises(ForbiddenAddressError):
            await guarded.stream(instance, "T").connect()
        with pytest.raises(ForbiddenAddressError):
            await guarded.stream(loopback(counter.port), "T").connect()
        assert counter.connections == 0
