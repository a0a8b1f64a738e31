"""Iceshrimp.NET, where it differs from the other servers at a step the bot takes (README, "Servers"):
its scope names, its token endpoint's errors, its revoke answer, how its stream refuses a token that may not
read it, and its rate limiter.
The fake's `iceshrimp` profile behaves like Iceshrimp.NET's source; each test checks the fake's answer on
the wire and what the bot makes of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import ClientSession, WSMsgType
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.commands.throttle import InstanceShare
from bot.config import LimitsConfig
from bot.connect import ConnectFlows
from bot.errors import InvalidCodeError
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.models import AppRegistration
from bot.fediverse.oauth import authorize_url, extract_code, new_pkce_verifier, new_state
from bot.fediverse.ratelimit import PacerPolicy, PacerRegistry
from bot.store.keyring import KeyRing
from bot.store.records import AccountId
from tests.fakes.gotosocial import ICESHRIMP, FakeGoToSocial
from tests.integration.fedi_support import FakeSleep, fedi_client, settings

PASSWORD = "Long-Strong-Passw0rd!"
EMAIL = "alice@example.org"
UNKNOWN_CODE = "c" * 32


@pytest.fixture
async def ice() -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial(profile=ICESHRIMP) as fake:
        fake.add_user("alice", EMAIL, PASSWORD)
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[FediverseClient]:
    async with fedi_client() as c:
        yield c


def instance_of(fake: FakeGoToSocial) -> InstanceRef:
    return parse_instance(fake.base_url, allow_http=True)


async def registered(fake: FakeGoToSocial, client: FediverseClient) -> tuple[AppRegistration, str]:
    app = await client.register_app(instance_of(fake), ["read"], client_name="gts-bot")
    url = authorize_url(
        instance_of(fake), app.client_id, ["read"], new_state(), pkce_verifier=new_pkce_verifier()
    )
    pasted = await fake.authorize(url, EMAIL, PASSWORD)
    code = extract_code(pasted)
    assert code is not None
    assert len(code) == ICESHRIMP.code_length
    return app, code


async def test_the_app_registration_refuses_a_scope_iceshrimp_does_not_know(ice: FakeGoToSocial) -> None:
    form = {"client_name": "x", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob"}
    async with httpx.AsyncClient(base_url=ice.base_url) as http:
        profile = await http.post("/api/v1/apps", data={**form, "scopes": "read:notifications profile"})
        granular = {**form, "scopes": "read:notifications read:accounts"}
        accounts = await http.post("/api/v1/apps", data=granular)
    assert (profile.status_code, profile.json()["error"]) == (400, "Invalid scopes parameter")
    assert accounts.status_code == 200


async def test_connect_with_profile_asks_iceshrimp_for_read_accounts_instead(
    ice: FakeGoToSocial, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    started_relays: list[AccountId] = []

    async def on_connected(account_id: AccountId) -> None:
        started_relays.append(account_id)

    async with fedi_client() as client:
        flows = ConnectFlows(
            sessions=sessions,
            keyring=keyring,
            client=client,
            fediverse=settings(),
            limits=LimitsConfig(),
            flow_ttl=timedelta(minutes=10),
            on_connected=on_connected,
            share=InstanceShare(time.monotonic),
        )
        started = await flows.start(
            "@alice:matrix.test", ice.base_url, ("read:notifications", "profile"), "!dm:matrix.test"
        )
        asked = parse_qs(urlsplit(started.authorize_url).query)["scope"]
        assert asked == ["read:accounts read:notifications"]
        code = await ice.authorize(started.authorize_url, EMAIL, PASSWORD)
        connected = await flows.complete("@alice:matrix.test", "!dm:matrix.test", code)
    assert connected.account.acct == f"alice@{ice.host}"
    assert started_relays == [connected.account.id]
    assert not connected.streaming_possible  # only `read` streams there: this account polls


async def test_token_errors_carry_doorkeepers_descriptions_as_the_error(
    ice: FakeGoToSocial, client: FediverseClient
) -> None:
    app, code = await registered(ice, client)
    form = {
        "grant_type": "authorization_code",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
    }
    async with httpx.AsyncClient(base_url=ice.base_url) as http:
        unknown = await http.post("/oauth/token", data={**form, "code": UNKNOWN_CODE})
        first = await http.post("/oauth/token", data={**form, "code": code})
        again = await http.post("/oauth/token", data={**form, "code": code})
    assert unknown.status_code == 401
    assert unknown.json()["error"].startswith("Client authentication failed")
    assert unknown.json()["error_description"] is None
    assert first.status_code == 200
    assert again.status_code == 400
    assert again.json()["error"].startswith("The provided authorization grant is invalid")


async def test_the_code_exchange_names_the_scopes_or_iceshrimp_grants_only_read(
    ice: FakeGoToSocial, client: FediverseClient
) -> None:
    scopes = ("read:accounts", "read:notifications", "write:statuses")
    app = await client.register_app(instance_of(ice), scopes, client_name="gts-bot")
    url = authorize_url(
        instance_of(ice), app.client_id, scopes, new_state(), pkce_verifier=new_pkce_verifier()
    )
    codes = [extract_code(await ice.authorize(url, EMAIL, PASSWORD)) for _ in range(2)]
    form = {
        "grant_type": "authorization_code",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
    }
    async with httpx.AsyncClient(base_url=ice.base_url) as http:
        unnamed = await http.post("/oauth/token", data={**form, "code": codes[0] or ""})
    assert unnamed.status_code == 400  # `read` was not granted, and it is what a bare request asks for
    grant = await client.exchange_code(instance_of(ice), app, codes[1] or "")
    assert sorted(grant.scope) == sorted(scopes)


async def test_mistyped_code_is_an_invalid_code(ice: FakeGoToSocial, client: FediverseClient) -> None:
    app, _ = await registered(ice, client)
    with pytest.raises(InvalidCodeError, match="did not recognise that code") as caught:
        await client.exchange_code(instance_of(ice), app, UNKNOWN_CODE)
    assert UNKNOWN_CODE not in str(caught.value)
    assert "HTTP 401" not in str(caught.value)


async def test_reused_code_is_an_invalid_code(ice: FakeGoToSocial, client: FediverseClient) -> None:
    app, code = await registered(ice, client)
    await client.exchange_code(instance_of(ice), app, code)
    with pytest.raises(InvalidCodeError, match="used already"):
        await client.exchange_code(instance_of(ice), app, code)


async def test_revoking_a_token_twice_is_fine_although_the_second_answer_is_403(
    ice: FakeGoToSocial, client: FediverseClient
) -> None:
    app, code = await registered(ice, client)
    grant = await client.exchange_code(instance_of(ice), app, code)
    await client.revoke(instance_of(ice), app, grant.access_token)
    async with httpx.AsyncClient(base_url=ice.base_url) as http:
        second = await http.post(
            "/oauth/revoke",
            data={
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "token": grant.access_token,
            },
        )
    assert (second.status_code, second.json()) == (
        403,
        {"error": "You are not authorized to revoke this token", "error_description": None},
    )
    await client.revoke(instance_of(ice), app, grant.access_token)  # the bot takes that 403 as revoked


@pytest.mark.parametrize(("scope", "opens"), [("read", True), ("read:notifications", False)])
async def test_stream_closes_with_1008_for_a_token_that_may_not_read_it(scope: str, opens: bool) -> None:
    async with FakeGoToSocial(profile=ICESHRIMP) as fake, ClientSession() as web:
        fake.add_user("alice")
        token = fake.issue_token("alice", scope)
        url = f"{fake.streaming_base_url}/api/v1/streaming?stream=user:notification"
        async with web.ws_connect(url, protocols=(token,)) as ws:
            if opens:
                fake.notify("alice", "follow", "bob")
                frame = await ws.receive()
                assert frame.type == WSMsgType.TEXT
                assert '"notification"' in frame.data
            else:
                frame = await ws.receive()
                assert frame.type == WSMsgType.CLOSE
                assert ws.close_code == 1008


async def test_rate_limit_is_per_user_without_headers_and_the_bot_waits_its_default() -> None:
    """Iceshrimp.NET's limiter says nothing about its budget: no X-RateLimit-* and no Retry-After on the
    429. Its partition is the signed-in user, so another user is not held back; the stream is not
    counted. The bot's pacer waits its default for a 429 that names no time, then goes through."""
    async with FakeGoToSocial(profile=ICESHRIMP) as fake, ClientSession() as web:
        fake.add_user("alice")
        fake.add_user("bob")
        fake.state.mastodon_limits["iceshrimp_sliding"] = (2, 60.0)
        fake.state.rate_clock = lambda: 1_000_000.0  # one window for the whole test
        alice, bob = fake.issue_token("alice", "read"), fake.issue_token("bob", "read")
        url = f"{fake.base_url}/api/v1/notifications"
        async with httpx.AsyncClient() as http:
            answers = [await http.get(url, headers={"Authorization": f"Bearer {alice}"}) for _ in range(3)]
            others = await http.get(url, headers={"Authorization": f"Bearer {bob}"})
        stream_url = f"{fake.streaming_base_url}/api/v1/streaming?stream=user"
        async with web.ws_connect(stream_url, protocols=(alice,)) as ws:
            assert not ws.closed  # the socket opens although alice's budget is spent
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"] == "Too Many Requests"
        assert not [h for h in answers[2].headers if h.lower().startswith(("x-ratelimit", "retry-after"))]
        assert others.status_code == 200

        sleep = FakeSleep()

        async def sleep_then_new_window(seconds: float) -> None:
            await sleep(seconds)
            fake.state.rate_clock = lambda: 2_000_000.0

        async with fedi_client(pacers=PacerRegistry(sleep=sleep_then_new_window)) as paced:
            await paced.notifications(instance_of(fake), alice)
        assert sleep.calls == [pytest.approx(PacerPolicy().default_retry_after, abs=1.0)]
