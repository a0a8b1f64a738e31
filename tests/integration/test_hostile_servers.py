"""Real loopback servers that misbehave: slow, huge, malformed, redirecting, rate limiting, not HTTP at all.

Every failure must come out as a specific FediverseError naming the instance, never as a crash."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from bot.errors import (
    BadResponseError,
    ExpiredCodeError,
    InstanceTimeoutError,
    InstanceUnreachableError,
    InvalidCodeError,
    InvalidRedirectError,
    NotAFediverseServerError,
    OAuthError,
    RateLimitedError,
    RevokeUnsupportedError,
    UnexpectedRedirectError,
)
from bot.fediverse.models import AppRegistration
from bot.fediverse.ratelimit import PacerPolicy, PacerRegistry
from tests.integration.fedi_support import FakeSleep, fedi_client, loopback, serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
APP = AppRegistration("CLIENTID", "s3cret-client-secret", ("read",))
CODE = "ZJJHNDQ0ZTYTNME0OS0ZYZI4LTLMZTKTZTY4OWZKMTYZMJA1"
TOKEN = "TOKENTOKENTOKENTOKENTOKENTOKEN"


@asynccontextmanager
async def server(routes: dict[tuple[str, str], Handler]) -> AsyncIterator[int]:
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    async with serve(app) as port:
        yield port


def fixed(
    status: int = 200,
    body: object = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        data = raw if raw is not None else json.dumps(body).encode()
        return web.Response(status=status, body=data, headers=headers, content_type=content_type)

    return handler


# -- slow ----------------------------------------------------------------------------------------------


async def test_slow_server_times_out() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.json_response({})

    async with (
        server({("GET", "/api/v1/notifications"): slow}) as port,
        fedi_client(request_timeout=0.3) as client,
    ):
        with pytest.raises(InstanceTimeoutError, match=r"127\.0\.0\.1:\d+ did not answer within 0.3 seconds"):
            await client.notifications(loopback(port), TOKEN)


async def test_trickling_body_hits_the_whole_request_deadline() -> None:
    """Each chunk arrives well within the read timeout, but the whole response takes too long."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b"[")
        for _ in range(100):
            await asyncio.sleep(0.05)
            await response.write(b" ")
        await response.write(b"]")
        return response

    async with (
        server({("GET", "/api/v1/notifications"): trickle}) as port,
        fedi_client(request_timeout=0.5) as client,
    ):
        with pytest.raises(InstanceTimeoutError, match=r"within 0\.5 seconds"):
            await client.notifications(loopback(port), TOKEN)


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with fedi_client() as client:
        with pytest.raises(InstanceUnreachableError, match="refused the connection"):
            await client.probe(loopback(port))


@asynccontextmanager
async def raw_server(reply: bytes, *, close: bool = True) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_not_http_at_all() -> None:
    async with raw_server(b"SSH-2.0-OpenSSH_9.6\r\n") as port, fedi_client() as client:
        with pytest.raises(BadResponseError, match="malformed HTTP"):
            await client.notifications(loopback(port), TOKEN)


async def test_connection_dropped_mid_body() -> None:
    reply = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{"id":'
    async with raw_server(reply) as port, fedi_client() as client:
        with pytest.raises((BadResponseError, InstanceUnreachableError)):
            await client.notifications(loopback(port), TOKEN)


# -- huge ----------------------------------------------------------------------------------------------


async def test_huge_body_with_content_length() -> None:
    big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    async with (
        server({("GET", "/api/v1/notifications"): fixed(raw=big)}) as port,
        fedi_client(max_response_bytes=64 * 1024) as client,
    ):
        with pytest.raises(BadResponseError, match="larger than 65,536 bytes"):
            await client.notifications(loopback(port), TOKEN)


async def test_huge_chunked_body_is_cut_off_while_streaming() -> None:
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(10_000):  # up to 160 MB if nobody stops reading
                await response.write(b" " * 16384)
                sent += 16384
        except (ConnectionError, RuntimeError):
            pass
        return response

    async with (
        server({("GET", "/api/v1/notifications"): endless}) as port,
        fedi_client(max_response_bytes=64 * 1024) as client,
    ):
        with pytest.raises(BadResponseError, match="larger than"):
            await client.notifications(loopback(port), TOKEN)
    assert sent < 50 * 1024 * 1024


async def test_gzip_bomb_is_capped_after_decompression() -> None:
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    handler = fixed(raw=bomb, headers={"Content-Encoding": "gzip"})
    async with (
        server({("GET", "/api/v1/notifications"): handler}) as port,
        fedi_client(max_response_bytes=64 * 1024) as client,
    ):
        with pytest.raises(BadResponseError, match="larger than"):
            await client.notifications(loopback(port), TOKEN)


async def test_gzip_response_within_the_cap_is_decoded() -> None:
    handler = fixed(raw=gzip.compress(b"[]"), headers={"Content-Encoding": "gzip"})
    async with server({("GET", "/api/v1/notifications"): handler}) as port, fedi_client() as client:
        page = await client.notifications(loopback(port), TOKEN)
    assert page.items == ()


# -- malformed and wrong shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"<html><body>hi</body></html>", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"],
)
async def test_malformed_json(raw: bytes) -> None:
    async with (
        server({("GET", "/api/v1/notifications"): fixed(raw=raw)}) as port,
        fedi_client(max_response_bytes=1024 * 1024) as client,
    ):
        with pytest.raises(BadResponseError, match="not valid JSON"):
            await client.notifications(loopback(port), TOKEN)


ACCOUNT = {"id": "01A", "username": "bob", "acct": "bob", "url": "http://x/@bob", "display_name": ""}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"id": "1"}, "not a list"),
        ("a string", "not a list"),
        ([1, 2], "not a JSON object"),
        ([{"type": "follow"}], "notification.id"),
        ([{"id": ["x"], "type": "follow"}], "notification.id"),
    ],
)
async def test_wrong_shapes(body: object, match: str) -> None:
    async with server({("GET", "/api/v1/notifications"): fixed(body=body)}) as port, fedi_client() as client:
        with pytest.raises(BadResponseError, match=match):
            await client.notifications(loopback(port), TOKEN)


async def test_an_unusable_item_with_an_id_is_skipped_but_counted() -> None:
    good = {"id": "01B", "type": "follow", "created_at": "2026-11-28T03:08:32.000Z", "account": ACCOUNT}
    broken = {"id": "01A", "type": "follow", "created_at": "yesterday", "account": ACCOUNT}
    async with (
        server({("GET", "/api/v1/notifications"): fixed(body=[good, broken])}) as port,
        fedi_client() as client,
    ):
        page = await client.notifications(loopback(port), TOKEN)
    assert [n.id for n in page.items] == ["01B"]
    assert page.skipped_ids == ("01A",)
    assert page.all_ids == ("01B", "01A")


INVALID_UTF8 = {
    "overlong": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "truncated": b"\xe2\x82",
    "stray-continuation": b"\x80",
    "above-unicode": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("bad", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_invalid_utf8_in_a_page_costs_only_the_bad_bytes(bad: bytes) -> None:
    """Not UTF-8 inside one notification's text: the page is read, the bad bytes become U+FFFD."""
    follow = {"id": "01A", "type": "follow", "created_at": "2026-11-28T03:08:32.000Z", "account": ACCOUNT}
    named = {**follow, "id": "01B", "account": {**ACCOUNT, "display_name": "HOSTILE-NAME"}}
    raw = json.dumps([follow, named]).encode().replace(b"HOSTILE-NAME", b"Bob " + bad + b" Smith")
    async with server({("GET", "/api/v1/notifications"): fixed(raw=raw)}) as port, fedi_client() as client:
        page = await client.notifications(loopback(port), TOKEN)
    assert [n.id for n in page.items] == ["01A", "01B"]
    name = page.items[1].account.display_name
    assert name.startswith("Bob \ufffd")
    assert name.endswith(" Smith")
    assert name[4:-6].strip("\ufffd") == ""  # nothing but replacement characters: no lone surrogate


@pytest.mark.parametrize(
    "routes",
    [
        {},  # 404 everywhere
        {("GET", "/api/v1/instance"): fixed(raw=b"<html>blog</html>", content_type="text/html")},
        {("GET", "/api/v1/instance"): fixed(body={"title": "no uri or version"})},
        {("GET", "/api/v1/instance"): fixed(body=["uri", "version"])},
        {("GET", "/api/v1/instance"): fixed(body={"uri": 5, "version": None})},
        {("GET", "/api/v1/instance"): fixed(status=401, raw=b"<p>log in</p>", content_type="text/html")},
    ],
)
async def test_not_a_fediverse_server(routes: dict[tuple[str, str], Handler]) -> None:
    async with server(routes) as port, fedi_client() as client:
        with pytest.raises(NotAFediverseServerError, match="does not look like"):
            await client.probe(loopback(port))


async def test_a_json_401_from_the_instance_endpoint_is_a_server_that_needs_a_login() -> None:
    """Limited-federation Mastodon: never "not a Mastodon API server"."""
    routes = {("GET", "/api/v1/instance"): fixed(status=401, body={"error": "Unauthorized"})}
    async with server(routes) as port, fedi_client() as client:
        info = await client.probe(loopback(port))
    assert (info.needs_login, info.version, info.streaming_url) == (True, "", None)


async def test_probe_falls_back_to_v2_and_server_header() -> None:
    v2 = {
        "domain": "social.example",
        "version": "4.3.0",
        "title": "Social",
        "configuration": {"urls": {"streaming": "wss://social.example"}},
    }
    async with server({("GET", "/api/v2/instance"): fixed(body=v2)}) as port, fedi_client() as client:
        info = await client.probe(loopback(port))
    assert (info.uri, info.version, info.software, info.streaming_url) == (
        "social.example",
        "4.3.0",
        "unknown",
        "wss://social.example",
    )
    assert info.account_domain == "social.example"


async def test_nodeinfo_link_off_instance_is_read_from_the_instance_itself() -> None:
    seen: list[str] = []

    async def nodeinfo(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"software": {"name": "Mastodon", "version": "4.3.1"}})

    routes = {
        ("GET", "/api/v1/instance"): fixed(body={"uri": "m.example", "version": "4.3.1", "title": "M"}),
        ("GET", "/.well-known/nodeinfo"): fixed(
            body={
                "links": [
                    {
                        "rel": "http://nodeinfo.diaspora.software/ns/schema/2.0",
                        "href": "http://evil.example/nodeinfo/2.0",
                    },
                ]
            }
        ),
        ("GET", "/nodeinfo/2.0"): nodeinfo,
    }
    async with server(routes) as port, fedi_client() as client:
        info = await client.probe(loopback(port))
    assert info.software == "mastodon"
    assert seen == ["/nodeinfo/2.0"]


# -- redirects -------------------------------------------------------------------------------------------


async def test_redirect_off_instance_is_refused_and_named_without_query() -> None:
    handler = fixed(302, {}, headers={"Location": "http://evil.example/steal?token=abc#x"})
    async with server({("GET", "/api/v1/instance"): handler}) as port, fedi_client() as client:
        with pytest.raises(UnexpectedRedirectError) as info:
            await client.probe(loopback(port))
    message = str(info.value)
    assert "http://evil.example/steal" in message
    assert "token" not in message
    assert "abc" not in message


async def test_same_origin_get_redirect_is_followed() -> None:
    instance = {"uri": "x.example", "version": "0.20.0", "title": "X"}
    routes = {
        ("GET", "/api/v1/instance"): fixed(301, {}, headers={"Location": "/api/v1/instance/"}),
        ("GET", "/api/v1/instance/"): fixed(body=instance),
    }
    async with server(routes) as port, fedi_client() as client:
        assert (await client.probe(loopback(port))).uri == "x.example"


async def test_redirect_loop_stops() -> None:
    routes = {("GET", "/api/v1/notifications"): fixed(302, {}, headers={"Location": "/api/v1/notifications"})}
    async with server(routes) as port, fedi_client() as client:
        with pytest.raises(UnexpectedRedirectError, match="too many"):
            await client.notifications(loopback(port), TOKEN)


async def test_post_redirect_is_never_followed() -> None:
    routes = {("POST", "/oauth/token"): fixed(307, {}, headers={"Location": "/oauth/token2"})}
    async with server(routes) as port, fedi_client() as client:
        with pytest.raises(UnexpectedRedirectError):
            await client.exchange_code(loopback(port), APP, CODE)


async def test_redirect_to_a_private_address_on_another_port_is_refused() -> None:
    async with server({("GET", "/x"): fixed(body={})}) as other:
        handler = fixed(302, {}, headers={"Location": f"http://127.0.0.1:{other}/x"})
        async with server({("GET", "/api/v1/instance"): handler}) as port, fedi_client() as client:
            with pytest.raises(UnexpectedRedirectError, match=f"127.0.0.1:{other}/x"):
                await client.probe(loopback(port))


# -- OAuth error mapping (scripted as other servers might answer) -----------------------------------------


def oauth_error(status: int, error: str, description: str = "", server_header: str | None = None) -> Handler:
    headers = {"Server": server_header} if server_header else None
    return fixed(status, {"error": error, "error_description": description}, headers=headers)


@pytest.mark.parametrize(
    ("handler", "exc"),
    [
        (oauth_error(400, "invalid_grant", "The provided authorization grant is invalid"), InvalidCodeError),
        (
            oauth_error(400, "invalid_grant", "invalid, expired, revoked, or issued to another client"),
            InvalidCodeError,
        ),
        (
            oauth_error(400, "invalid_grant", "Bad Request: could not get access token: invalid_grant"),
            ExpiredCodeError,
        ),
        (oauth_error(400, "invalid_grant", "x", server_header="gotosocial"), ExpiredCodeError),
        (oauth_error(403, "invalid redirect uri", "Forbidden: requested redirect URI"), InvalidRedirectError),
        (oauth_error(400, "unsupported_grant_type", f"no {CODE} for you"), OAuthError),
        (fixed(500, raw=b"oops", content_type="text/plain"), OAuthError),
    ],
)
async def test_token_errors_map_and_never_echo_the_code(handler: Handler, exc: type[Exception]) -> None:
    async with server({("POST", "/oauth/token"): handler}) as port, fedi_client() as client:
        with pytest.raises(exc) as info:
            await client.exchange_code(loopback(port), APP, CODE)
    assert CODE not in str(info.value)
    assert APP.client_secret not in str(info.value)


async def test_token_response_with_wrong_shape() -> None:
    routes = {("POST", "/oauth/token"): fixed(body={"access_token": 12, "token_type": "Bearer"})}
    async with server(routes) as port, fedi_client() as client:
        with pytest.raises(BadResponseError, match="token response"):
            await client.exchange_code(loopback(port), APP, CODE)


async def test_revoke_unsupported() -> None:
    async with server({}) as port, fedi_client() as client:
        with pytest.raises(RevokeUnsupportedError):
            await client.revoke(loopback(port), APP, TOKEN)


async def test_gateway_errors_are_unreachable() -> None:
    routes = {("GET", "/api/v1/notifications"): fixed(503, raw=b"down", content_type="text/plain")}
    async with server(routes) as port, fedi_client() as client:
        with pytest.raises(InstanceUnreachableError, match="HTTP 503"):
            await client.notifications(loopback(port), TOKEN)


# -- rate limiting ---------------------------------------------------------------------------------------


def iso(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def test_429_without_retry_after_waits_for_the_reset_then_succeeds() -> None:
    calls = 0

    async def limited(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:  # GoToSocial's rate limit: no Retry-After, but the window's end
            return web.json_response(
                {"error": "rate limit reached"},
                status=429,
                headers={
                    "X-Ratelimit-Limit": "300",
                    "X-Ratelimit-Remaining": "0",
                    "X-Ratelimit-Reset": iso(40),
                },
            )
        return web.json_response(
            [],
            headers={
                "X-Ratelimit-Limit": "300",
                "X-Ratelimit-Remaining": "299",
                "X-Ratelimit-Reset": iso(300),
            },
        )

    sleep = FakeSleep()
    async with (
        server({("GET", "/api/v1/notifications"): limited}) as port,
        fedi_client(pacers=PacerRegistry(sleep=sleep)) as client,
    ):
        page = await client.notifications(loopback(port), TOKEN)
    assert page.items == ()
    assert calls == 2
    assert len(sleep.calls) == 1
    assert 35 <= sleep.calls[0] <= 45


async def test_429_with_retry_after_is_obeyed() -> None:
    calls = 0

    async def throttled(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:  # GoToSocial's throttling
            return web.json_response(
                {"error": "server capacity exceeded"}, status=429, headers={"Retry-After": "30"}
            )
        return web.json_response([])

    sleep = FakeSleep()
    async with (
        server({("GET", "/api/v1/notifications"): throttled}) as port,
        fedi_client(pacers=PacerRegistry(sleep=sleep)) as client,
    ):
        await client.notifications(loopback(port), TOKEN)
    assert sleep.calls == [pytest.approx(30.0, abs=1.0)]


async def test_persistent_429_gives_up_with_retry_after() -> None:
    calls = 0

    async def always(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(
            {"error": "server capacity exceeded"}, status=429, headers={"Retry-After": "7"}
        )

    sleep = FakeSleep()
    pacers = PacerRegistry(sleep=sleep, policy=PacerPolicy(max_retries=2))
    async with (
        server({("GET", "/api/v1/notifications"): always}) as port,
        fedi_client(pacers=pacers) as client,
    ):
        with pytest.raises(RateLimitedError, match="about 7 seconds") as info:
            await client.notifications(loopback(port), TOKEN)
    assert info.value.retry_after == 7.0
    assert calls == 3


async def test_429_asking_for_a_very_long_wait_fails_at_once() -> None:
    handler = fixed(429, {"error": "rate limit reached"}, headers={"Retry-After": "3600"})
    sleep = FakeSleep()
    async with (
        server({("GET", "/api/v1/notifications"): handler}) as port,
        fedi_client(pacers=PacerRegistry(sleep=sleep)) as client,
    ):
        with pytest.raises(RateLimitedError) as info:
            await client.notifications(loopback(port), TOKEN)
    assert info.value.retry_after == 3600.0
    assert sleep.calls == []


async def test_pacer_waits_for_the_window_instead_of_hitting_429() -> None:
    """The server allows 5 requests per window; the pacer must hold back before the server says 429."""
    limit, used, statuses = 5, 0, []
    reset = iso(120)

    async def counting(request: web.Request) -> web.Response:
        nonlocal used
        used += 1
        remaining = limit - used
        headers = {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(max(remaining, 0)),
            "X-Ratelimit-Reset": reset,
        }
        status = 429 if remaining < 0 else 200
        statuses.append(status)
        return web.json_response(
            [] if status == 200 else {"error": "rate limit reached"}, status=status, headers=headers
        )

    sleep = FakeSleep()
    async with (
        server({("GET", "/api/v1/notifications"): counting}) as port,
        fedi_client(pacers=PacerRegistry(sleep=sleep)) as client,
    ):
        for _ in range(5):
            await client.notifications(loopback(port), TOKEN)
    assert 429 not in statuses
    # With a reserve of 2 out of 5, the later requests had to wait for the window's end (~120 s).
    assert any(100 <= s <= 125 for s in sleep.calls)


# -- what the client sends -------------------------------------------------------------------------------


async def test_request_shape_for_notifications() -> None:
    seen: list[web.Request] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response([])

    async with server({("GET", "/api/v1/notifications"): record}) as port, fedi_client() as client:
        await client.notifications(
            loopback(port),
            TOKEN,
            min_id="01B",
            limit=500,
            types=["mention", "favourite"],
            exclude_types=["follow"],
        )
    (request,) = seen
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in request.query_string
    assert request.query.getall("types[]") == ["mention", "favourite"]
    assert request.query.getall("exclude_types[]") == ["follow"]
    assert request.query["limit"] == "80"
    assert request.query["min_id"] == "01B"
    assert "types" not in request.query


async def test_oauth_requests_are_form_bodies() -> None:
    bodies: dict[str, dict[str, str]] = {}

    async def record(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-www-form-urlencoded"
        bodies[request.path] = dict(await request.post())  # type: ignore[arg-type]
        if request.path == "/api/v1/apps":
            return web.json_response({"client_id": "C", "client_secret": "S", "scopes": ["read", "write"]})
        return web.json_response({})

    routes: dict[tuple[str, str], Handler] = {
        ("POST", "/api/v1/apps"): record,
        ("POST", "/oauth/revoke"): record,
    }
    async with server(routes) as port, fedi_client() as client:
        app = await client.register_app(
            loopback(port), ["write", "read"], client_name="gts-bot", website="https://bot.example"
        )
        await client.revoke(loopback(port), app, TOKEN)
    assert bodies["/api/v1/apps"] == {
        "client_name": "gts-bot",
        "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
        "scopes": "read write",
        "website": "https://bot.example",
    }
    assert bodies["/oauth/revoke"] == {"client_id": "C", "client_secret": "S", "token": TOKEN}
    assert app.scopes == ("read", "write")
