"""The connect conversation and account management against the fake GoToSocial and a real database."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.accounts import AccountsService, names_accounts
from bot.commands.handlers import BotCommands
from bot.commands.throttle import InstanceShare
from bot.config import LimitsConfig, load_config
from bot.connect import ConnectFlows, requested_scopes
from bot.dm_registry import DmDirectory
from bot.errors import (
    CommandError,
    DnsError,
    ExpiredCodeError,
    ForbiddenAddressError,
    InvalidClientError,
    InvalidCodeError,
    InvalidInstanceError,
    LookupsBusyError,
)
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import build_http_client
from bot.fediverse.models import AppRegistration
from bot.fediverse.oauth import new_pkce_verifier, pkce_challenge
from bot.fediverse.resolver import IPAddress, SystemResolver
from bot.matrix.errors import MatrixForbidden
from bot.matrix.types import RoomId, UserId
from bot.rich_text import RichText
from bot.store.keyring import KeyRing
from bot.store.records import AccountId
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.fedi_support import StubResolver, fedi_client, loopback, serve, settings
from tests.integration.router_support import flows_for

EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"
ALICE, BOB = "@alice:matrix.test", "@bob:matrix.test"
DM, OTHER_ROOM = "!dm:matrix.test", "!group:matrix.test"


@dataclass
class RecordingRelay:
    restarted: list[AccountId] = field(default_factory=list)
    removed: list[AccountId] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    async def restart_account(self, account_id: AccountId) -> None:
        self.restarted.append(account_id)

    async def remove_account(self, account_id: AccountId) -> None:
        self.removed.append(account_id)

    async def forget_user(self, matrix_user_id: str) -> None:
        self.forgotten.append(matrix_user_id)


@dataclass
class World:
    gts: FakeGoToSocial
    flows: ConnectFlows
    accounts: AccountsService
    relay: RecordingRelay
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    client: FediverseClient

    async def authorize(self, url: str, email: str = EMAIL) -> str:
        return await self.gts.authorize(url, email, PASSWORD)


@pytest.fixture
async def world(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> AsyncIterator[World]:
    async with FakeGoToSocial() as gts, fedi_client() as client:
        gts.add_user("alice", EMAIL, PASSWORD)
        gts.add_user("bob", "bob@example.org", PASSWORD)
        relay = RecordingRelay()
        flows, accounts = flows_for(
            sessions, keyring, client, relay, limits=LimitsConfig(max_accounts_per_user=1)
        )
        yield World(gts, flows, accounts, relay, sessions, keyring, client)


async def test_connect_stores_the_verified_account_encrypted_and_starts_relaying(world: World) -> None:
    world.gts.notify("alice", "follow_request", "bob")  # an old notification: not to be relayed
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    query = parse_qs(urlsplit(started.authorize_url).query)
    assert query["scope"] == ["read"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["urn:ietf:wg:oauth:2.0:oob"]
    assert len(query["state"][0]) >= 24
    assert started.software == "gotosocial"

    code = await world.authorize(started.authorize_url)
    connected = await world.flows.complete(ALICE, DM, code)
    assert connected.account.acct == f"alice@{world.gts.host}"
    assert connected.streaming_possible
    assert world.relay.restarted == [connected.account.id]
    [stored] = await world.accounts.for_user(ALICE)
    assert stored.token == world.gts.active_tokens("alice")[0]
    assert stored.cursor == world.gts.notifications("alice")[0]["id"]  # no backlog: start after the newest
    assert await world.accounts.for_user(BOB) == []


async def test_app_registration_is_reused_per_instance_and_scope_set(world: World) -> None:
    await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.start(BOB, world.gts.base_url, ("read",), "!bobdm:matrix.test")
    assert len(world.gts.apps) == 1
    await world.flows.start(BOB, world.gts.base_url, ("read:notifications", "profile"), "!bobdm:x")
    assert len(world.gts.apps) == 2


async def test_a_flow_is_single_use_and_bound_to_its_user_and_room(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    code = await world.authorize(started.authorize_url)
    with pytest.raises(CommandError, match="No connection is waiting"):
        await world.flows.complete(BOB, DM, code)
    with pytest.raises(CommandError, match="No connection is waiting"):
        await world.flows.complete(ALICE, OTHER_ROOM, code)
    await world.flows.complete(ALICE, DM, code)
    with pytest.raises(CommandError, match="No connection is waiting"):
        await world.flows.complete(ALICE, DM, code)


async def test_wrong_code_consumes_the_flow_and_stores_nothing(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.authorize(started.authorize_url)
    with pytest.raises(InvalidCodeError) as caught:
        await world.flows.complete(ALICE, DM, "WRONGCODEWRONGCODEWRONGCODE123")
    assert "WRONGCODE" not in str(caught.value)
    assert not await world.flows.has_pending(ALICE)
    assert await world.accounts.for_user(ALICE) == []


async def test_expired_code_gets_its_own_message(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    code = await world.authorize(started.authorize_url)
    world.gts.age_codes(400)
    with pytest.raises(ExpiredCodeError, match="5 minutes"):
        await world.flows.complete(ALICE, DM, code)
    assert world.gts.active_tokens("alice") == []


async def test_an_app_the_server_forgot_is_registered_again(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    code = await world.authorize(started.authorize_url)
    world.gts.delete_app(next(iter(world.gts.apps)))
    with pytest.raises(InvalidClientError):
        await world.flows.complete(ALICE, DM, code)
    again = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    connected = await world.flows.complete(ALICE, DM, await world.authorize(again.authorize_url))
    assert connected.account.acct.startswith("alice@")


async def test_narrower_grant_than_requested_is_refused_and_revoked(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    narrowed = re.sub(r"scope=read", "scope=read%3Anotifications+read%3Aaccounts", started.authorize_url)
    code = await world.authorize(narrowed)
    with pytest.raises(CommandError, match="granted only"):
        await world.flows.complete(ALICE, DM, code)
    assert world.gts.active_tokens("alice") == []
    assert await world.accounts.for_user(ALICE) == []


async def test_one_request_at_a_time_so_a_code_cannot_reach_the_wrong_instance(world: World) -> None:
    async with FakeGoToSocial() as other:
        other.add_user("alice", EMAIL, PASSWORD)
        first = await world.flows.start(ALICE, world.gts.base_url, (), DM)
        assert not first.replaced_earlier
        second = await world.flows.start(ALICE, other.base_url, (), DM)
        assert second.replaced_earlier
        stale_code = await world.authorize(first.authorize_url)
        with pytest.raises(InvalidCodeError):
            await world.flows.complete(ALICE, DM, stale_code)  # goes to `other`, never to the first
        assert world.gts.requests_to("/oauth/token") == 0
    assert await world.flows.cancel(ALICE) == 0


async def test_account_limit_counts_new_accounts_not_reconnections(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    again = await world.flows.start(ALICE, world.gts.base_url, (), DM)  # the same account: allowed
    await world.flows.complete(ALICE, DM, await world.authorize(again.authorize_url))
    bobs = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    with pytest.raises(CommandError, match="already have 1 connected accounts"):
        await world.flows.complete(
            ALICE, DM, await world.gts.authorize(bobs.authorize_url, "bob@example.org", PASSWORD)
        )
    assert world.gts.active_tokens("bob") == []  # the refused account's token was revoked
    assert [a.acct.split("@")[0] for a in await world.accounts.for_user(ALICE)] == ["alice"]


async def test_reconnecting_the_same_account_replaces_and_revokes_the_old_token(world: World) -> None:
    first = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(first.authorize_url))
    [old_token] = world.gts.active_tokens("alice")
    async with world.sessions() as session, session.begin():
        [account] = await Repositories(session, world.keyring).accounts.list_for_user(ALICE)
        await Repositories(session, world.keyring).accounts.set_cursor(account.id, "01CURSOR")
    second = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(second.authorize_url))
    [account] = await world.accounts.for_user(ALICE)
    assert world.gts.active_tokens("alice") == [account.token]
    assert account.token != old_token
    assert account.cursor == "01CURSOR"  # relaying continues where it was


async def test_revoke_revokes_on_the_server_stops_the_relay_and_deletes_locally(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    connected = await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    [outcome] = await world.accounts.revoke(ALICE, None)
    assert outcome.revoked_on_server
    assert world.relay.removed == [connected.account.id]
    assert world.gts.active_tokens("alice") == []
    assert await world.accounts.for_user(ALICE) == []


async def test_revoke_without_a_server_endpoint_still_deletes_and_explains(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    world.gts.faults.revoke_enabled = False
    [outcome] = await world.accounts.revoke(ALICE, "all")
    assert not outcome.revoked_on_server
    assert "/oauth/authorized_applications" in outcome.manual_revoke_hint
    assert await world.accounts.for_user(ALICE) == []


async def test_a_user_sees_and_revokes_only_their_own_accounts(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    with pytest.raises(CommandError, match="no connected accounts"):
        await world.accounts.revoke(BOB, "all")
    with pytest.raises(CommandError, match="no connected accounts"):
        await world.accounts.revoke(BOB, f"@alice@{world.gts.host}")
    assert len(await world.accounts.for_user(ALICE)) == 1


async def test_forget_me_revokes_and_deletes_everything(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    await world.flows.start(ALICE, world.gts.base_url, (), DM)
    outcomes = await world.accounts.forget(ALICE)
    assert [o.revoked_on_server for o in outcomes] == [True]
    assert world.relay.forgotten == [ALICE]
    assert not await world.flows.has_pending(ALICE)
    assert world.gts.active_tokens("alice") == []


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        ((), True),
        (("read",), True),
        (("read:notifications,profile",), True),
        (("write",), False),
        (("read:notifications",), False),
        (("bogus",), False),
        (("admin:read",), False),
    ],
)
def test_requested_scopes(args: tuple[str, ...], ok: bool) -> None:
    if ok:
        assert requested_scopes(args, ("read",))
    else:
        with pytest.raises(CommandError):
            requested_scopes(args, ("read",))


async def test_denylisted_and_private_instances_are_refused_before_any_request(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    resolver = StubResolver({"evil.example": ["10.0.0.7"], "metadata.example": ["169.254.169.254"]})
    cfg = settings(allow_http=False, allow_private_addresses=False, instance_denylist=("*.blocked.example",))
    async with fedi_client(resolver, allow_http=False, allow_private_addresses=False) as client:
        flows, _ = flows_for(sessions, keyring, client, RecordingRelay(), fediverse=cfg)
        with pytest.raises(InvalidInstanceError, match="not allowed"):
            await flows.start(ALICE, "social.blocked.example", (), DM)
        for host in ("evil.example", "metadata.example"):
            with pytest.raises(ForbiddenAddressError):
                await flows.start(ALICE, host, (), DM)
        with pytest.raises(InvalidInstanceError):
            await flows.start(ALICE, "http://plain.example", (), DM)
    assert not await flows.has_pending(ALICE)


async def test_a_unicode_denylist_entry_blocks_both_spellings_of_the_host(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    required = {
        "GTS_BOT_MATRIX__HOMESERVER": "https://matrix.test.org",
        "GTS_BOT_MATRIX__USER_ID": "@bot:test.org",
        "GTS_BOT_MATRIX__PASSWORD": "s3cret-pass",
    }
    config = load_config(None, {**required, "GTS_BOT_FEDIVERSE__INSTANCE_DENYLIST": "bücher.example"})
    resolver = StubResolver({})  # nothing may be looked up: the refusal comes first
    async with fedi_client(resolver, allow_http=False) as client:
        flows, _ = flows_for(sessions, keyring, client, RecordingRelay(), fediverse=config.fediverse)
        for spelling in ("bücher.example", "BÜCHER.example", "xn--bcher-kva.example", "@me@bücher.example"):
            with pytest.raises(InvalidInstanceError, match="not allowed"):
                await flows.start(ALICE, spelling, (), DM)
    assert resolver.calls == []


async def test_a_deadline_after_the_code_exchange_revokes_the_token_instead_of_stranding_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    code = await world.authorize(started.authorize_url)
    stalled = asyncio.Event()

    async def verify_that_never_answers(*args: object, **kwargs: object) -> None:
        stalled.set()  # the token exists now; the instance stops answering
        await asyncio.Event().wait()

    # The one fault injected by hand: a cancel (the command deadline) at an exact point of the flow.
    monkeypatch.setattr(world.client, "verify_credentials", verify_that_never_answers)
    command = asyncio.create_task(world.flows.complete(ALICE, DM, code))
    await stalled.wait()
    assert len(world.gts.active_tokens("alice")) == 1
    command.cancel()
    with pytest.raises(asyncio.CancelledError):
        await command
    await world.flows.settle()
    assert world.gts.active_tokens("alice") == []
    assert await world.accounts.for_user(ALICE) == []


async def test_a_deadline_while_storing_still_stores_the_account(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    code = await world.authorize(started.authorize_url)
    storing, release = asyncio.Event(), asyncio.Event()

    async def slow_relay_start(account_id: AccountId) -> None:
        storing.set()
        await release.wait()

    world.flows._on_connected = slow_relay_start
    command = asyncio.create_task(world.flows.complete(ALICE, DM, code))
    await storing.wait()
    command.cancel()
    with pytest.raises(asyncio.CancelledError):
        await command
    release.set()
    await world.flows.settle()
    [account] = await world.accounts.for_user(ALICE)
    assert world.gts.active_tokens("alice") == [account.token]


async def test_one_users_connect_loop_cannot_spend_an_instances_budget_for_others(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    now = [0.0]
    async with FakeGoToSocial() as gts, fedi_client() as client:
        gts.add_user("bob", "bob@example.org", PASSWORD)
        flows, _ = flows_for(sessions, keyring, client, RecordingRelay(), share=InstanceShare(lambda: now[0]))
        refusals: list[str] = []
        for _ in range(20):  # alice loops `connect` at the same instance
            try:
                await flows.start(ALICE, gts.base_url, (), DM)
            except CommandError as exc:
                refusals.append(str(exc))
        assert 14 <= len(refusals) <= 19  # her share is a few connects, not the instance's 300 requests
        assert all("your share of requests" in r and "minute" in r for r in refusals)
        spent = len(gts.request_log)
        with pytest.raises(CommandError, match="your share of requests"):
            await flows.start(ALICE, gts.base_url, (), DM)
        assert len(gts.request_log) == spent  # refused before anything reached the instance

        bobs = await flows.start(BOB, gts.base_url, (), "!bobdm:matrix.test")  # bob is unaffected
        code = await gts.authorize(bobs.authorize_url, "bob@example.org", PASSWORD)
        connected = await flows.complete(BOB, "!bobdm:matrix.test", code)
        assert connected.account.acct.startswith("bob@")

        now[0] += 300.0  # alice's share refills with time
        await flows.start(ALICE, gts.base_url, (), DM)


async def test_each_flow_binds_its_code_with_its_own_pkce_challenge(world: World) -> None:
    alices = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    bobs = await world.flows.start(BOB, world.gts.base_url, (), "!bobdm:matrix.test")
    challenges = []
    for user, started in ((ALICE, alices), (BOB, bobs)):
        query = parse_qs(urlsplit(started.authorize_url).query)
        assert query["code_challenge_method"] == ["S256"]
        async with world.sessions() as session:
            (flow,) = await Repositories(session, world.keyring).flows.get_for_user(user)
        assert flow.oauth_state == query["state"][0]
        verifier = flow.pkce_verifier  # random and stored encrypted: the public state does not give it
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", verifier)
        assert verifier not in started.authorize_url
        digest = hashlib.sha256(verifier.encode()).digest()
        assert query["code_challenge"] == [base64.urlsafe_b64encode(digest).rstrip(b"=").decode()]
        challenges.append(query["code_challenge"][0])
    assert challenges[0] != challenges[1]  # the same shared app, but each flow its own binding


async def test_the_code_exchange_sends_the_flows_pkce_verifier() -> None:
    """Against a server that enforces PKCE (Mastodon does; GoToSocial ignores it): only the verifier of
    the flow that asked for the code redeems it."""
    verifier = new_pkce_verifier()
    expected = pkce_challenge(verifier)

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        sent = form.get("code_verifier")
        if not isinstance(sent, str) or pkce_challenge(sent) != expected:
            refusal = {"error": "invalid_grant", "error_description": "bad verifier"}
            return web.json_response(refusal, status=400)
        return web.json_response({"access_token": "TOKEN" * 8, "token_type": "Bearer", "scope": "read"})

    app = web.Application()
    app.router.add_route("POST", "/oauth/token", token)
    registration = AppRegistration("CLIENTID", "client-secret", ("read",))
    async with serve(app) as port, fedi_client() as client:
        grant = await client.exchange_code(loopback(port), registration, "A" * 32, verifier)
        assert grant.access_token == "TOKEN" * 8
        with pytest.raises(InvalidCodeError):
            await client.exchange_code(loopback(port), registration, "A" * 32, new_pkce_verifier())


async def test_a_deadline_during_a_revoke_still_revokes_and_deletes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    revoking, release = asyncio.Event(), asyncio.Event()
    real_revoke = world.client.revoke

    async def slow_revoke(*args: Any, **kwargs: Any) -> None:
        revoking.set()
        await release.wait()
        await real_revoke(*args, **kwargs)

    monkeypatch.setattr(world.client, "revoke", slow_revoke)  # the instance answers slowly
    command = asyncio.create_task(world.accounts.revoke(ALICE, None))
    await revoking.wait()
    command.cancel()  # the command deadline
    with pytest.raises(asyncio.CancelledError):
        await command
    release.set()
    await world.accounts.settle()
    assert world.gts.active_tokens("alice") == []
    assert await world.accounts.for_user(ALICE) == []


async def test_connect_says_try_again_later_while_hostile_names_hold_every_lookup_thread(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    """`connect aN.evil.example` with names whose server never answers: the lookups hold the resolver's
    own threads, and the next connect is refused at once with a clear reply instead of queueing."""
    released, entered = threading.Event(), threading.Semaphore(0)

    def hanging_lookup(host: str, port: int) -> list[IPAddress]:
        entered.release()
        released.wait()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    resolver = SystemResolver(max_lookups=2, lookup=hanging_lookup)
    cfg = settings(allow_http=False, connect_timeout=600.0)
    try:
        async with build_http_client(cfg, resolver) as http:
            flows = ConnectFlows(
                sessions=sessions,
                keyring=keyring,
                client=FediverseClient.from_settings(http, cfg),
                fediverse=cfg,
                limits=LimitsConfig(),
                flow_ttl=timedelta(minutes=10),
                on_connected=RecordingRelay().restart_account,
                share=InstanceShare(time.monotonic),
            )
            held = [asyncio.create_task(flows.start(ALICE, f"a{n}.evil.example", (), DM)) for n in (1, 2)]
            for _ in held:
                await asyncio.to_thread(entered.acquire)
            with pytest.raises(LookupsBusyError, match="try again in a minute"):
                await flows.start(BOB, "a3.evil.example", (), DM)
            released.set()
            for task in held:
                with pytest.raises(DnsError):
                    await task
    finally:
        released.set()
        resolver.close()
    assert not await flows.has_pending(BOB)


@dataclass
class RecordingContext:
    """A command context that keeps the replies (plain text)."""

    sender: str
    room_id: str = DM
    prefix: str = "!gts"
    event_id: str = "$cmd"
    body: str = ""
    replies: list[str] = field(default_factory=list)

    async def reply(self, reply: RichText) -> None:
        self.replies.append(reply.plain)


@pytest.mark.parametrize(
    ("word", "names_an_account"),
    [
        ("@alice@social.example", True),
        ("2", True),
        ("social.example", True),
        ("bücher.example:8443", True),
        ("mention", False),
        ("all", False),
        ("admin.sign_up", False),  # a type with a dot
        ("pleroma:emoji_reaction", False),
        ("mention,follow", False),
    ],
)
def test_what_notify_takes_for_an_account(word: str, names_an_account: bool) -> None:
    assert names_accounts(word) is names_an_account


async def test_notify_takes_an_instance_host_as_the_account_like_revoke_and_pause(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    commands = BotCommands(flows=world.flows, accounts=world.accounts, clock=lambda: datetime.now(UTC))
    ctx = RecordingContext(ALICE)
    await commands.notify(ctx, (world.gts.host, "mention", "follow"))
    [stored] = await world.accounts.for_user(ALICE)
    assert stored.notify_types == ("follow", "mention")
    assert ctx.replies == [f"Relaying follow, mention for @alice@{world.gts.host}."]
    with pytest.raises(CommandError, match=r"None of your accounts matches 'other\.example'"):
        await commands.notify(ctx, ("other.example", "mention"))


@dataclass
class LeavingRooms:
    """The Matrix rooms side of the DM directory: DM is alice's 1:1 room. Each leave is logged with how
    many replies the command had sent by then."""

    replies: list[str]
    log: list[tuple[str, int]] = field(default_factory=list)

    async def is_one_to_one(self, room_id: RoomId, user_id: UserId) -> bool:
        return (room_id, user_id) == (DM, ALICE)

    async def create_dm(self, user_id: UserId) -> RoomId:
        raise AssertionError("no DM should be created here")

    async def leave(self, room_id: RoomId) -> None:
        self.log.append((room_id, len(self.replies)))


async def test_forget_me_answers_then_leaves_the_dm_and_forgets_it(world: World) -> None:
    started = await world.flows.start(ALICE, world.gts.base_url, (), DM)
    await world.flows.complete(ALICE, DM, await world.authorize(started.authorize_url))
    ctx = RecordingContext(ALICE)
    rooms = LeavingRooms(ctx.replies)
    dms = DmDirectory(world.sessions, rooms)
    await dms.record(ALICE, DM)
    commands = BotCommands(
        flows=world.flows, accounts=world.accounts, clock=lambda: datetime.now(UTC), dms=dms
    )
    await commands.forget_me(ctx, ())
    assert rooms.log == []  # asking is not confirming
    assert "I leave this chat" in ctx.replies[0]

    await commands.forget_me(ctx, ("confirm",))
    [_prompt, answer] = ctx.replies
    assert "I am leaving this chat" in answer
    assert "public keys of your devices stay" in answer  # what is not deleted is said, not hidden
    assert rooms.log == [(DM, 2)]  # left once, after the answer was sent
    assert await dms.room_for(ALICE) is None
    assert await world.accounts.for_user(ALICE) == []


async def test_a_refused_leave_is_logged_and_the_dm_is_forgotten_all_the_same(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    class RefusingRooms(LeavingRooms):
        async def leave(self, room_id: RoomId) -> None:
            raise MatrixForbidden("not allowed", "M_FORBIDDEN", 403)

    dms = DmDirectory(sessions, RefusingRooms([]))
    await dms.record(ALICE, DM)
    assert await dms.leave(ALICE, DM) is False
    assert await dms.room_for(ALICE) is None
    assert "could not leave the DM" in caplog.text
