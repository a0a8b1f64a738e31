"""The fediverse client against the fake GoToSocial: the whole OAuth flow, notifications, revoke, and the
server's real error behaviour (reused/expired codes, unknown apps, scopes, rate limits)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from bot.errors import (
    ExpiredCodeError,
    InsufficientScopeError,
    InvalidClientError,
    InvalidCodeError,
    RevokeUnsupportedError,
    TokenRejectedError,
)
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.models import AppRegistration, TokenGrant
from bot.fediverse.oauth import authorize_url, extract_code, new_pkce_verifier, new_state
from bot.fediverse.ratelimit import PacerPolicy, PacerRegistry
from bot.fediverse.scopes import scopes_cover
from bot.fediverse.streaming import build_stream_connector
from tests.fakes.gotosocial import MASTODON, FakeGoToSocial
from tests.integration.fedi_support import FakeSleep, fedi_client, settings

PASSWORD = "Long-Strong-Passw0rd!"
EMAIL = "alice@example.org"


@pytest.fixture
async def gts() -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial() as fake:
        fake.add_user("alice", EMAIL, PASSWORD)
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[FediverseClient]:
    async with fedi_client() as c:
        yield c


def instance_of(gts: FakeGoToSocial) -> InstanceRef:
    return parse_instance(gts.base_url, allow_http=True)


async def connect(
    gts: FakeGoToSocial, client: FediverseClient, scopes: tuple[str, ...] = ("read",)
) -> tuple[AppRegistration, TokenGrant]:
    instance = instance_of(gts)
    app = await client.register_app(instance, scopes, client_name="gts-bot", website="https://bot.example")
    code = await new_code(gts, app, scopes)
    return app, await client.exchange_code(instance, app, code)


async def new_code(gts: FakeGoToSocial, app: AppRegistration, scopes: tuple[str, ...] = ("read",)) -> str:
    verifier = new_pkce_verifier()
    url = authorize_url(instance_of(gts), app.client_id, scopes, new_state(), pkce_verifier=verifier)
    pasted = await gts.authorize(url, EMAIL, PASSWORD)
    code = extract_code(f"  {pasted}\n")
    assert code is not None
    return code


async def test_probe_recognises_gotosocial(gts: FakeGoToSocial, client: FediverseClient) -> None:
    info = await client.probe(instance_of(gts))
    assert info.software == "gotosocial"
    assert info.is_gotosocial
    assert info.version.startswith("0.20.0")
    assert info.uri == gts.host
    assert info.account_domain == gts.host
    assert info.streaming_url == f"wss://{gts.host}"  # advertised as wss even over http, like the real one


async def test_full_flow_register_authorize_exchange_verify_page_revoke(
    gts: FakeGoToSocial, client: FediverseClient
) -> None:
    instance = instance_of(gts)
    app = await client.register_app(instance, ["read"], client_name="gts-bot", website="https://bot.example")
    assert app.scopes == ("read",)
    assert app.client_secret not in repr(app)
    registered = gts.apps[app.client_id]
    assert registered.redirect_uris == ["urn:ietf:wg:oauth:2.0:oob"]

    code = await new_code(gts, app)
    grant = await client.exchange_code(instance, app, code)
    assert scopes_cover(grant.scope, ("read:notifications", "read:accounts"))
    assert grant.access_token not in repr(grant)
    assert gts.active_tokens("alice") == [grant.access_token]

    account = await client.verify_credentials(instance, grant.access_token)
    assert account.username == "alice"
    assert account.acct == f"alice@{gts.host}"  # completed from the instance's account domain

    sources = [f"fan{i}@remote.example" for i in range(5)]
    created = [gts.notify("alice", "follow", s)["id"] for s in sources]
    gts.notify("alice", "mention", "bob@remote.example", status_text="hi <b>alice</b>")

    # Page through everything, two at a time, newest first, using only the Link cursors.
    seen: list[str] = []
    page = await client.notifications(instance, grant.access_token, limit=2)
    first_prev = page.prev_min_id
    while page.items:
        assert len(page.items) <= 2
        seen += [n.id for n in page.items]
        assert page.next_max_id == page.items[-1].id
        page = await client.notifications(instance, grant.access_token, limit=2, max_id=page.next_max_id)
    assert seen == sorted(seen, reverse=True)
    assert set(created) < set(seen)
    assert len(seen) == 6
    assert page.next_max_id is None
    assert page.prev_min_id is None

    newer = await client.notifications(instance, grant.access_token, min_id=first_prev)
    assert newer.items == ()
    fresh = gts.notify("alice", "follow", "late@remote.example")["id"]
    newer = await client.notifications(instance, grant.access_token, min_id=first_prev)
    assert [n.id for n in newer.items] == [fresh]

    mentions = await client.notifications(instance, grant.access_token, types=["mention"])
    assert [n.type for n in mentions.items] == ["mention"]
    status = mentions.items[0].status
    assert status is not None
    assert "alice" in status.content
    assert mentions.items[0].account.acct == "bob@remote.example"
    no_follows = await client.notifications(instance, grant.access_token, exclude_types=["follow"])
    assert {n.type for n in no_follows.items} == {"mention"}

    await client.revoke(instance, app, grant.access_token)
    assert gts.active_tokens("alice") == []
    with pytest.raises(TokenRejectedError, match="rejected the bot's access token"):
        await client.verify_credentials(instance, grant.access_token)
    with pytest.raises(TokenRejectedError):
        await client.notifications(instance, grant.access_token)
    await client.revoke(instance, app, grant.access_token)  # already revoked: still fine


async def test_reused_code_is_an_invalid_code(gts: FakeGoToSocial, client: FediverseClient) -> None:
    instance = instance_of(gts)
    app = await client.register_app(instance, ["read"], client_name="gts-bot")
    code = await new_code(gts, app)
    await client.exchange_code(instance, app, code)
    with pytest.raises(InvalidCodeError, match="used already") as info:
        await client.exchange_code(instance, app, code)
    assert code not in str(info.value)


async def test_expired_code(client: FediverseClient) -> None:
    async with FakeGoToSocial(code_ttl=60.0) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        instance = instance_of(gts)
        app = await client.register_app(instance, ["read"], client_name="gts-bot")
        code = await new_code(gts, app)
        gts.age_codes(120)
        with pytest.raises(ExpiredCodeError, match="about 5 minutes") as info:
            await client.exchange_code(instance, app, code)
        assert code not in str(info.value)


async def test_code_for_another_app_is_reported_as_not_belonging(
    gts: FakeGoToSocial, client: FediverseClient
) -> None:
    instance = instance_of(gts)
    app_a = await client.register_app(instance, ["read"], client_name="a")
    app_b = await client.register_app(instance, ["read"], client_name="b")
    code = await new_code(gts, app_a)
    with pytest.raises(ExpiredCodeError, match="does not belong"):
        await client.exchange_code(instance, app_b, code)
    await client.exchange_code(instance, app_a, code)  # the failed attempt did not use the code up


async def test_deleted_app_is_an_invalid_client(gts: FakeGoToSocial, client: FediverseClient) -> None:
    """GoToSocial says "no rows" for an unknown client_id exactly as for a used code; the client tells
    them apart so the caller knows to register a new app."""
    instance = instance_of(gts)
    app = await client.register_app(instance, ["read"], client_name="gts-bot")
    code = await new_code(gts, app)
    gts.delete_app(app.client_id)
    with pytest.raises(InvalidClientError, match="registers anew"):
        await client.exchange_code(instance, app, code)


async def test_wrong_client_secret_is_an_invalid_client(gts: FakeGoToSocial, client: FediverseClient) -> None:
    instance = instance_of(gts)
    app = await client.register_app(instance, ["read"], client_name="gts-bot")
    code = await new_code(gts, app)
    wrong = AppRegistration(app.client_id, "not-the-secret", app.scopes)
    with pytest.raises(InvalidClientError):
        await client.exchange_code(instance, wrong, code)


async def test_app_probe_token_is_revoked(gts: FakeGoToSocial, client: FediverseClient) -> None:
    """Checking whether the app still exists mints an app-only token; it must not be left behind."""
    instance = instance_of(gts)
    app = await client.register_app(instance, ["read"], client_name="gts-bot")
    code = await new_code(gts, app)
    await client.exchange_code(instance, app, code)
    with pytest.raises(InvalidCodeError):
        await client.exchange_code(instance, app, code)
    assert [t for t in gts.tokens.values() if t.user_id is None] == []


async def test_insufficient_scope(gts: FakeGoToSocial, client: FediverseClient) -> None:
    token = gts.issue_token("alice", "read:accounts")
    instance = instance_of(gts)
    assert (await client.verify_credentials(instance, token)).username == "alice"
    with pytest.raises(InsufficientScopeError, match="permission"):
        await client.notifications(instance, token)


async def test_revoke_unsupported_and_foreign_token(gts: FakeGoToSocial, client: FediverseClient) -> None:
    instance = instance_of(gts)
    app, grant = await connect(gts, client)
    gts.faults.revoke_enabled = False
    with pytest.raises(RevokeUnsupportedError):
        await client.revoke(instance, app, grant.access_token)


async def test_account_domain_differs_from_host(client: FediverseClient) -> None:
    async with FakeGoToSocial(account_domain="example.org") as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        instance = instance_of(gts)
        info = await client.probe(instance)
        assert info.account_domain == "example.org"
        token = gts.issue_token("alice", "read")
        assert (await client.verify_credentials(instance, token)).acct == "alice@example.org"
        given = await client.verify_credentials(instance, token, account_domain="given.example")
        assert given.acct == "alice@given.example"


async def test_mastodon_flavour(client: FediverseClient) -> None:
    async with FakeGoToSocial(profile=MASTODON) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        instance = instance_of(gts)
        assert (await client.probe(instance)).software == "mastodon"
        app = await client.register_app(instance, ["read"], client_name="gts-bot")
        code = await new_code(gts, app)
        await client.exchange_code(instance, app, code)
        with pytest.raises(InvalidCodeError):  # Mastodon's invalid_grant for a used code
            await client.exchange_code(instance, app, code)


async def test_rate_limited_fake_is_paced_not_429() -> None:
    """With the fake's rate limiter on (6 requests per 1-second window), 9 requests go through without a
    single 429: the pacer waits for the window's end instead. max_retries=0 turns any 429 into an error."""
    async with FakeGoToSocial(rate_limit=6, rate_window=1.0) as gts:
        gts.add_user("alice", EMAIL, PASSWORD)
        token = gts.issue_token("alice", "read")
        waits: list[float] = []

        async def recording_sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(seconds)

        pacers = PacerRegistry(sleep=recording_sleep, policy=PacerPolicy(max_retries=0, min_reserve=1))
        async with fedi_client(pacers=pacers) as paced:
            for _ in range(9):
                await paced.notifications(instance_of(gts), token)
        assert waits  # it did hold back
        assert gts.requests_to("/api/v1/notifications") == 9


async def test_throttled_fake_is_retried_after_retry_after(gts: FakeGoToSocial) -> None:
    token = gts.issue_token("alice", "read")
    sleep = FakeSleep()

    async def sleep_and_unthrottle(seconds: float) -> None:
        await sleep(seconds)
        gts.faults.throttle = False

    gts.faults.throttle = True
    async with fedi_client(pacers=PacerRegistry(sleep=sleep_and_unthrottle)) as paced:
        await paced.notifications(instance_of(gts), token)
    assert sleep.calls == [pytest.approx(30.0, abs=1.0)]


async def test_no_secret_reaches_any_log_record(
    gts: FakeGoToSocial, client: FediverseClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything at DEBUG, from httpx, httpcore, websockets and us: no token, code or client secret."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "websockets", "websockets.client", "bot", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)  # other tests may have quietened these
    instance = instance_of(gts)
    app = await client.register_app(instance, ["read"], client_name="gts-bot")
    code = await new_code(gts, app)
    caplog.clear()  # the fake's own browser flow is not ours to judge
    grant = await client.exchange_code(instance, app, code)
    with pytest.raises(InvalidCodeError):
        await client.exchange_code(instance, app, code)
    await client.verify_credentials(instance, grant.access_token)
    await client.notifications(instance, grant.access_token)
    async with build_stream_connector(settings()).stream(instance, grant.access_token) as stream:
        gts.notify("alice", "follow", "dave@remote.example")
        async with asyncio.timeout(60):  # bounds a hang only
            async for _ in stream:
                break
    await client.revoke(instance, app, grant.access_token)
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert caplog.records  # something was logged at all
    for secret in (grant.access_token, code, app.client_secret):
        assert secret not in text
