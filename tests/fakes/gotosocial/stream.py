"""GET /api/v1/streaming of the fake (§8): websocket, auth only at connect, ``ping!`` pings.

The profile decides where the token may come from, how a token that may not read the stream is refused
(403 at the handshake, Mastodon's in-stream error frame, or Iceshrimp.NET's close 1008), and whether the
web host answers 301 to a separate streaming host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import WSMsgType, web

from tests.fakes.gotosocial.core import go_json, token_permits
from tests.fakes.gotosocial.httputil import EXTRA_HEADERS, ApiError, bearer, lookup_auth, state_of
from tests.fakes.gotosocial.profiles import Profile
from tests.fakes.gotosocial.render import streaming_url
from tests.fakes.gotosocial.state import RawFrames, StreamConn

# Streams a client may add with a subscribe message; `user:notification` is silently ignored there.
_SUBSCRIBABLE = frozenset({"public:local", "public", "user", "direct", "list"})


def _token(request: web.Request, profile: Profile) -> str | None:
    """The token from the first source this server reads (GtS: query, protocol, bearer)."""
    sources = profile.stream_token_sources
    if "query" in sources and request.query.get("access_token"):
        return request.query["access_token"]
    if "protocol" in sources and request.headers.get("Sec-WebSocket-Protocol"):
        return request.headers["Sec-WebSocket-Protocol"]
    return bearer(request) if "bearer" in sources else None


async def streaming_redirect(request: web.Request) -> web.StreamResponse:
    """The web host of a server whose streaming lives elsewhere (Mastodon's StreamingController): 301."""
    state = state_of(request)
    target = f"{streaming_url(state, actual=True)}{request.path_qs}"
    return web.Response(status=301, headers={"Location": target})


async def streaming(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    profile = state.profile
    if not state.faults.streaming_enabled:
        raise ApiError(404)
    protocol_header = request.headers.get("Sec-WebSocket-Protocol")
    token = _token(request, profile)
    if not token:
        raise ApiError(profile.stream_no_token_status, "token not supplied")
    auth = lookup_auth(state, token)
    if auth is None or auth.user is None:
        raise ApiError(401)
    may_read = token_permits(auth.token.scope, *profile.stream_scopes)
    if not may_read and profile.stream_scope_refusal == "handshake":
        raise ApiError(403, "token has insufficient scope permission")
    echo = protocol_header if protocol_header and profile.stream_echoes_protocol else None
    silent = state.faults.stream_silent  # a half-open stream: no pongs, no close reply, nothing sent
    ws = web.WebSocketResponse(protocols=(echo,) if echo else (), autoping=not silent, autoclose=not silent)
    if not ws.can_prepare(request).ok:
        resp = web.Response(status=400, text="Bad Request\n", headers={"Sec-Websocket-Version": "13"})
        resp.content_type = "text/plain"
        resp.charset = "utf-8"
        return resp
    for name, value in request.get(EXTRA_HEADERS, {}).items():
        ws.headers[name] = value
    await ws.prepare(request)
    if not may_read and profile.stream_scope_refusal == "close_1008":
        # Iceshrimp.NET (Streaming/WebSocketConnection.cs): the subscribe to a channel whose scopes the
        # token lacks closes the socket with PolicyViolation, and nothing is said before.
        await ws.close(code=1008)
        return ws

    transport = request.transport
    if state.faults.stream_unread and transport is not None:
        transport.pause_reading()  # pongs and pings from the client pile up on its side

    def abort() -> None:
        if transport is not None:
            transport.abort()

    if silent:
        return await _silent(request, ws)
    conn = StreamConn(user_id=auth.user.user_id, access=token, streams={request.query.get("stream", "")},
                      queue=asyncio.Queue(), abort=abort)
    if not may_read:  # Mastodon opens the socket, then says so in a frame and sends nothing else
        conn.streams.clear()
        await ws.send_str(go_json({"error": "Access token does not have the required scopes", "status": 401}))
    state.streams.append(conn)
    reader = asyncio.create_task(_read_loop(ws, conn))
    getter: asyncio.Task[str | RawFrames] | None = None
    try:
        while True:
            if getter is None:
                getter = asyncio.create_task(conn.queue.get())
            done, _ = await asyncio.wait({getter, reader}, timeout=state.ping_interval,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                frame = getter.result()
                getter = None
                if isinstance(frame, RawFrames):
                    await _write_raw(request, frame)
                else:
                    await ws.send_str(frame)
            elif reader in done:
                break
            elif profile.stream_pings:
                await ws.ping(b"ping!")
    except (ConnectionError, RuntimeError):
        pass  # the client went away or the connection was dropped
    finally:
        if conn in state.streams:
            state.streams.remove(conn)
        for task in (getter, reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _silent(request: web.Request, ws: web.WebSocketResponse) -> web.WebSocketResponse:
    """Handshake done, then silence: whatever the client sends is read and ignored until it hangs up."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass
    if request.transport is not None:
        request.transport.abort()
    return ws


async def _write_raw(request: web.Request, raw: RawFrames) -> None:
    """Write `raw` to the socket as it is, as fast as the client reads it (TCP flow control)."""
    transport, protocol = request.transport, request.protocol
    for _ in range(raw.count):
        if transport is None or transport.is_closing():
            raise ConnectionError("the client went away")
        transport.write(raw.data)
        if protocol._paused:  # over the transport's high-water mark: wait until the client reads
            await protocol._drain_helper()


async def _read_loop(ws: web.WebSocketResponse, conn: StreamConn) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            data = json.loads(msg.data)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        name = data.get("stream")
        if not isinstance(name, str) or name not in _SUBSCRIBABLE:
            continue
        if data.get("type") == "subscribe":
            conn.streams.add(name)
        elif data.get("type") == "unsubscribe":
            conn.streams.discard(name)
