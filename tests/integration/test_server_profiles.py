"""Every server profile of the fake (GoToSocial, Mastodon, Akkoma) against the bot's detection, streaming
and catch-up: what each server does differently, and that the bot copes with each."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import ClientSession, WSMsgType, WSServerHandshakeError

from bot.errors import FediverseError, ForbiddenAddressError, InstanceUnreachableError, StreamRefusedError
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.models import Notification
from bot.fediverse.oauth import extract_code
from bot.fediverse.streaming import NotificationStream, build_stream_connector, stream_endpoint
from bot.store.models import AccountState
from tests.fakes.gotosocial import AKKOMA, GOTOSOCIAL, MASTODON, PROFILES, FakeGoToSocial, Profile
from tests.fakes.gotosocial.testkit import PW, authorize_url, bearer, register, token_form
from tests.integration.fedi_support import StubResolver, connection_counter, fedi_client, settings
from tests.integration.relay_support import Harness, cursor_is
from tests.waiting import wait_until

ALL = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))


def instance_of(gts: FakeGoToSocial) -> InstanceRef:
    return parse_instance(gts.base_url, allow_http=True)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def first_notification(stream: NotificationStream) -> Notification:
    async with asyncio.timeout(10):
        async for notification in stream:
            return notification
    raise AssertionError("the stream ended")


async def handshake(
    web: ClientSession,
    url: str,
    *,
    protocols: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
    echo: str | None = None,
) -> int:
    """101 when the websocket opened (checking the echoed protocol), else the refusal's status."""
    try:
        async with web.ws_connect(url, protocols=protocols, headers=headers) as ws:
            assert ws.protocol == echo
            return 101
    except WSServerHandshakeError as exc:
        return exc.status


# -- the fake's profiles, seen over raw HTTP ------------------------------------------------------------


@ALL
async def test_notification_pages_follow_the_servers_default_and_cap(
    profile: Profile, http: httpx.AsyncClient
) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice")
        for _ in range(90):
            gts.notify("alice", "follow", "bob")
        token = gts.issue_token("alice")
        url = f"{gts.base_url}/api/v1/notifications"
        default = await http.get(url, headers=bearer(token))
        asked_80 = await http.get(url, params={"limit": "80"}, headers=bearer(token))
    assert len(default.json()) == profile.notification_limit_default
    assert len(asked_80.json()) == profile.notification_limit_max
    assert (profile.name, len(asked_80.json())) in {
        ("gotosocial", 80), ("mastodon", 80), ("akkoma", 40), ("iceshrimp", 80)
    }


async def test_limited_federation_mastodon_shows_its_instance_only_to_a_signed_in_user(
    http: httpx.AsyncClient,
) -> None:
    async with FakeGoToSocial(profile=dataclasses.replace(MASTODON, limited_federation=True)) as gts:
        gts.add_user("alice")
        anonymous = await http.get(f"{gts.base_url}/api/v2/instance")
        token = gts.issue_token("alice")
        signed_in = await http.get(f"{gts.base_url}/api/v2/instance", headers=bearer(token))
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "This API requires an authenticated user"}
    assert signed_in.json()["domain"] == gts.host


@ALL
async def test_streaming_accepts_the_token_only_where_the_server_reads_it(profile: Profile) -> None:
    async with FakeGoToSocial(profile=profile) as gts, ClientSession() as web:
        gts.add_user("alice")
        token = gts.issue_token("alice")
        url = f"{gts.streaming_base_url}/api/v1/streaming?stream=user:notification"
        outcomes = {
            "query": await handshake(web, f"{url}&access_token={token}"),
            "protocol": await handshake(
                web, url, protocols=(token,), echo=token if profile.stream_echoes_protocol else None
            ),
            "bearer": await handshake(web, url, headers={"Authorization": f"Bearer {token}"}),
        }
    ways = ("query", "protocol", "bearer")
    refused = profile.stream_no_token_status  # 401; Iceshrimp.NET: 400 "Missing WebSocket protocol header"
    assert outcomes == {way: 101 if way in profile.stream_token_sources else refused for way in ways}
    assert outcomes["protocol"] == 101  # the one way every server accepts


async def test_mastodons_web_host_redirects_streaming_to_the_streaming_host(http: httpx.AsyncClient) -> None:
    async with FakeGoToSocial(profile=MASTODON) as gts:
        r = await http.get(f"{gts.base_url}/api/v1/streaming?stream=user:notification")
        v2 = (await http.get(f"{gts.base_url}/api/v2/instance")).json()
        v1 = (await http.get(f"{gts.base_url}/api/v1/instance")).json()
    assert r.status_code == 301
    assert r.headers["Location"] == f"{gts.streaming_base_url}/api/v1/streaming?stream=user:notification"
    assert gts.streaming_base_url != f"ws://{gts.host}"
    assert v2["configuration"]["urls"]["streaming"] == v1["urls"]["streaming_api"] == gts.streaming_base_url


async def test_gotosocial_advertises_wss_even_over_plain_http(http: httpx.AsyncClient) -> None:
    async with FakeGoToSocial(profile=GOTOSOCIAL) as gts:
        v2 = (await http.get(f"{gts.base_url}/api/v2/instance")).json()
    assert v2["configuration"]["urls"]["streaming"] == f"wss://{gts.host}"


async def test_mastodon_opens_the_stream_then_refuses_it_in_a_frame() -> None:
    async with FakeGoToSocial(profile=MASTODON) as gts, ClientSession() as web:
        gts.add_user("alice")
        token = gts.issue_token("alice", "write")
        url = f"{gts.streaming_base_url}/api/v1/streaming?stream=user:notification"
        async with web.ws_connect(url, protocols=(token,)) as ws:
            message = await ws.receive(timeout=10)
    assert message.type is WSMsgType.TEXT
    frame = json.loads(message.data)
    assert frame["status"] == 401
    assert "event" not in frame


@pytest.mark.parametrize("profile", [MASTODON, AKKOMA], ids=["mastodon", "akkoma"])
async def test_revoking_a_token_closes_its_streams_on_servers_that_do(profile: Profile) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice")
        token = gts.issue_token("alice")
        connector = build_stream_connector(settings())
        endpoint = stream_endpoint(instance_of(gts), gts.streaming_base_url)
        async with connector.stream(instance_of(gts), token, endpoint=endpoint) as stream:
            await wait_until(lambda: gts.open_streams("alice") == 1)
            gts.revoke_all("alice")
            with pytest.raises(InstanceUnreachableError, match=r"lost|closed"):
                await first_notification(stream)


# -- detection ----------------------------------------------------------------------------------------------


@ALL
async def test_probe_recognises_every_profile(profile: Profile) -> None:
    async with FakeGoToSocial(profile=profile) as gts, fedi_client() as client:
        info = await client.probe(instance_of(gts))
    assert (info.software, info.version, info.uri, info.needs_login) == (
        profile.software.lower(), profile.version, gts.host, False
    )
    assert info.streaming_url is not None


async def test_a_gotosocial_without_a_version_string_is_recognised() -> None:
    unversioned = dataclasses.replace(GOTOSOCIAL, version="")
    async with FakeGoToSocial(profile=unversioned) as gts, fedi_client() as client:
        gts.faults.status_override["/.well-known/nodeinfo"] = 404  # nothing but the instance documents
        info = await client.probe(instance_of(gts))
    assert (info.software, info.version, info.uri) == ("gotosocial", "", gts.host)


@pytest.mark.parametrize("has_v2", [True, False], ids=["v1-and-v2", "v1-only"])
async def test_a_limited_federation_mastodon_is_a_server_that_needs_a_login(has_v2: bool) -> None:
    limited = dataclasses.replace(MASTODON, limited_federation=True, serves_instance_v2=has_v2)
    async with FakeGoToSocial(profile=limited) as gts, fedi_client() as client:
        gts.add_user("alice")
        info = await client.probe(instance_of(gts))
        app = await client.register_app(instance_of(gts), ["read"], client_name="gts-bot")  # no login needed
        advertised = await client.streaming_url(instance_of(gts), gts.issue_token("alice"))
    assert (info.needs_login, info.software, info.uri) == (True, "mastodon", gts.host)
    assert app.client_id
    assert advertised == gts.streaming_base_url


# -- streaming ----------------------------------------------------------------------------------------------


@ALL
async def test_the_bot_streams_from_where_each_server_advertises(profile: Profile) -> None:
    async with FakeGoToSocial(profile=profile) as gts, fedi_client() as client:
        gts.add_user("alice")
        token = gts.issue_token("alice")
        advertised = await client.streaming_url(instance_of(gts), token)
        endpoint = stream_endpoint(instance_of(gts), advertised)
        connector = build_stream_connector(settings())
        async with connector.stream(instance_of(gts), token, endpoint=endpoint) as stream:
            await wait_until(lambda: gts.open_streams("alice") == 1)
            sent = gts.notify("alice", "mention", "bob")
            received = await first_notification(stream)
    assert received.id == sent["id"]
    assert f"ws://{endpoint.netloc}" == gts.streaming_base_url
    assert gts.requests_to("/api/v1/streaming") == 1  # no redirect, no retry


async def test_a_301_from_the_web_host_is_followed_to_the_streaming_host() -> None:
    quiet = dataclasses.replace(MASTODON, advertises_streaming_host=False)
    async with FakeGoToSocial(profile=quiet) as gts:
        gts.add_user("alice")
        connector = build_stream_connector(settings())
        async with connector.stream(instance_of(gts), gts.issue_token("alice")) as stream:
            assert f"ws://{stream.endpoint.netloc}" == gts.streaming_base_url
            await wait_until(lambda: gts.open_streams("alice") == 1)
            sent = gts.notify("alice", "follow", "bob")
            assert (await first_notification(stream)).id == sent["id"]
    assert gts.requests_to("/api/v1/streaming") == 2  # the 301, then the streaming host


async def test_an_advertised_streaming_host_goes_through_the_address_guard() -> None:
    async with connection_counter() as counter:
        guarded = build_stream_connector(
            settings(allow_private_addresses=False), StubResolver({"stream.example": ["127.0.0.1"]})
        )
        instance = InstanceRef("https", "social.example")
        endpoint = stream_endpoint(instance, f"wss://stream.example:{counter.port}")
        with pytest.raises(ForbiddenAddressError):
            await guarded.stream(instance, "T", endpoint=endpoint).connect()
        assert counter.connections == 0
        allowed = build_stream_connector(
            settings(allow_private_addresses=True), StubResolver({"stream.example": ["127.0.0.1"]})
        )
        with pytest.raises(FediverseError):  # the counter is no websocket server
            await allowed.stream(instance, "T", endpoint=endpoint).connect()
        await wait_until(lambda: counter.connections == 1, what="the allowed connection")


async def test_akkoma_refuses_a_token_sent_only_as_bearer_but_rest_accepts_it() -> None:
    """Why a handshake 401 alone never means "revoked"."""
    async with FakeGoToSocial(profile=AKKOMA) as gts, ClientSession() as web, fedi_client() as client:
        gts.add_user("alice")
        token = gts.issue_token("alice")
        with pytest.raises(WSServerHandshakeError) as refused:
            await web.ws_connect(f"{gts.streaming_base_url}/api/v1/streaming?stream=user:notification",
                                 headers={"Authorization": f"Bearer {token}"})
        account = await client.verify_credentials(instance_of(gts), token)
    assert refused.value.status == 401
    assert account.username == "alice"


async def test_an_error_frame_ends_the_stream_with_a_refusal() -> None:
    async with FakeGoToSocial(profile=MASTODON) as gts:
        gts.add_user("alice")
        connector = build_stream_connector(settings())
        endpoint = stream_endpoint(instance_of(gts), gts.streaming_base_url)
        token = gts.issue_token("alice", "write")
        async with connector.stream(instance_of(gts), token, endpoint=endpoint) as s:
            with pytest.raises(StreamRefusedError) as refused:
                await first_notification(s)
    assert (refused.value.status, refused.value.in_stream) == (401, True)


# -- the relay against each profile -------------------------------------------------------------------------


@ALL
async def test_a_catch_up_of_100_waiting_notifications_loses_none(profile: Profile, h: Harness) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        gts.add_user("alice")
        start = gts.notify("alice", "follow", "zed")
        waiting = [gts.notify("alice", "follow", "bob")["id"] for _ in range(100)]
        account = await h.add_account(gts, "alice", cursor=start["id"])
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: cursor_is(h, account.id, waiting[-1]), what="the whole backlog")
        await wait_until(lambda: manager.live_streams == 1, what="streaming after the catch-up")
        live = gts.notify("alice", "mention", "bob", status_text="live after the backlog")
        await wait_until(lambda: cursor_is(h, account.id, live["id"]), what="the live one")
    text = "\n".join(h.sender.bodies())
    assert "live after the backlog" in text
    assert await h.outbox() == []
    pages = gts.requests_to("/api/v1/notifications")
    assert pages >= -(-100 // profile.notification_limit_max) + 1  # full pages, then the empty one


@ALL
async def test_live_relay_streams_from_each_server(profile: Profile, h: Harness) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        account = await h.add_account(gts, "alice", cursor="0")
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: gts.open_streams("alice") == 1, what="a stream")
        sent = gts.notify("alice", "mention", "bob", status_text="streamed")
        await wait_until(lambda: cursor_is(h, account.id, sent["id"]))
        assert manager.account_mode(account.id) == "streaming"
        assert "streamed" in h.sender.events[-1].body


async def test_a_refused_handshake_with_a_working_token_falls_back_to_polling(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.relay.account_relay")
    query_only = dataclasses.replace(AKKOMA, stream_token_sources=frozenset({"query"}))
    async with FakeGoToSocial(profile=query_only) as gts:
        account = await h.add_account(gts, "alice", cursor="0")
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: manager.account_mode(account.id) == "polling", what="poll mode")
        sent = gts.notify("alice", "follow", "bob")
        await wait_until(lambda: cursor_is(h, account.id, sent["id"]), what="polled delivery")
        assert (await h.account(account.id)).state is AccountState.ACTIVE
        token = (await h.account(account.id)).token
    notes = [r.getMessage() for r in caplog.records if "polling instead" in r.getMessage()]
    assert notes
    assert "handshake (status 401)" in notes[0]
    assert all(token not in r.getMessage() for r in caplog.records)


async def test_an_in_stream_error_frame_moves_the_account_to_polling(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.relay.account_relay")
    strict = dataclasses.replace(MASTODON, stream_scopes=frozenset({"admin:read"}))
    async with FakeGoToSocial(profile=strict) as gts:
        account = await h.add_account(gts, "alice", cursor="0")
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: manager.account_mode(account.id) == "polling", what="poll mode")
        sent = gts.notify("alice", "follow", "bob")
        await wait_until(lambda: cursor_is(h, account.id, sent["id"]), what="polled delivery")
        assert (await h.account(account.id)).state is AccountState.ACTIVE
    assert any("error frame" in r.getMessage() for r in caplog.records)


@ALL
async def test_a_revoked_token_breaks_the_account_on_every_server(profile: Profile, h: Harness) -> None:
    async with FakeGoToSocial(profile=profile) as gts:
        account = await h.add_account(gts, "alice", cursor="0")
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: gts.open_streams("alice") == 1, what="a stream")
        gts.revoke_all("alice")
        gts.drop_streams()  # GoToSocial keeps streaming after a revoke; the next connect is what fails
        await wait_until(
            lambda: _state_is(h, account, AccountState.BROKEN), what="the account marked broken"
        )


async def _state_is(h: Harness, account: object, state: AccountState) -> bool:
    return (await h.account(account.id)).state is state  # type: ignore[attr-defined]


async def test_many_accounts_on_one_instance_ask_where_it_streams_once(h: Harness) -> None:
    async with FakeGoToSocial(profile=MASTODON) as gts:
        accounts = [await h.add_account(gts, name, cursor="0") for name in ("alice", "bob", "carol")]
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: manager.live_streams == len(accounts), what="every account streaming")
    asked = gts.requests_to("/api/v2/instance") + gts.requests_to("/api/v1/instance")
    assert asked == 1
    assert gts.requests_to("/api/v1/streaming") == len(accounts)  # each went straight to the streaming host


@ALL
async def test_each_server_shows_its_own_code_page_and_code_format_and_the_bot_reads_both(
    profile: Profile,
) -> None:
    async with FakeGoToSocial(profile=profile) as gts, httpx.AsyncClient(base_url=gts.base_url) as http:
        gts.add_user("alice", "alice@example.org", PW)
        app = await register(http)
        code = await gts.authorize(authorize_url(gts, app), "alice@example.org", PW)
        assert len(code) == profile.code_length
        pasted_page = f"{gts.base_url}{profile.oob_path}?code={code}&state=s1"
        assert extract_code(pasted_page) == code
        assert extract_code(f"  {code}\n") == code
        r = await http.post("/oauth/token", data=token_form(app, code))
        assert r.status_code == 200, r.text
        assert r.json()["access_token"]
