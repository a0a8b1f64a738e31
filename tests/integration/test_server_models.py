"""Where servers differ in their rate limits, token reuse, scopes and login states, against the fake's
profiles (mastodon-family.md): the bot paces each bucket apart, never revokes a token another connection
uses, and says what each server means."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.commands.handlers import BotCommands
from bot.config import RelayConfig
from bot.connect import ConnectFlows
from bot.errors import InactiveLoginError, RateLimitedError, TokenRejectedError
from bot.fediverse.ratelimit import PacerRegistry
from bot.rich_text import RichText
from bot.store.keyring import KeyRing
from bot.store.records import utc_now
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.gotosocial.profiles import AKKOMA, GOTOSOCIAL, ICESHRIMP, MASTODON, Profile
from tests.fakes.gotosocial.testkit import PW, authorize_url, bearer, register, token_form
from tests.integration.fedi_support import FakeSleep, fedi_client
from tests.integration.relay_support import Harness
from tests.integration.router_support import Relay, flows_for
from tests.waiting import wait_until

EMAIL = "alice@example.org"
ALICE, BOB = "@alice:matrix.test", "@bob:matrix.test"
ALICE_DM, BOB_DM = "!alice-dm:matrix.test", "!bob-dm:matrix.test"


@asynccontextmanager
async def server(profile: Profile) -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial(profile=profile) as fake:
        fake.add_user("alice", EMAIL, PW)
        yield fake


def pin_rate_windows(fake: FakeGoToSocial) -> None:
    """Mastodon's windows are aligned to multiples of their period (10 minutes for registrations): pin the
    fake's clock inside a window that ends 10 to 20 minutes from now, so none ends during the test."""
    now = time.time()
    pinned = now - now % 600 + 900
    fake.state.rate_clock = lambda: pinned


# -- the fake's servers: what the bot has to cope with ------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "reuses"), [(GOTOSOCIAL, False), (MASTODON, True), (AKKOMA, True), (ICESHRIMP, False)]
)
async def test_the_same_account_app_and_scopes_get_the_same_token_where_the_server_reuses(
    profile: Profile, reuses: bool
) -> None:
    async with server(profile) as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        app = await register(http, "read")
        tokens = []
        for _ in range(2):
            code = await fake.authorize(authorize_url(fake, app, "read"), EMAIL, PW)
            answer = await http.post("/oauth/token", data=token_form(app, code))
            tokens.append(answer.json()["access_token"])
    assert (tokens[0] == tokens[1]) is reuses


async def test_mastodon_headers_describe_the_tightest_bucket_and_a_429_has_no_retry_after() -> None:
    async with server(MASTODON) as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        pin_rate_windows(fake)
        fake.spend_rate_budget("apps", 4)
        registered = await http.post(
            "/api/v1/apps", data={"client_name": "bot", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob"}
        )
        assert registered.headers["X-RateLimit-Limit"] == "5"
        assert registered.headers["X-RateLimit-Remaining"] == "0"
        datetime.fromisoformat(registered.headers["X-RateLimit-Reset"])  # ISO 8601
        unauthenticated = await http.get("/api/v1/instance")
        assert unauthenticated.headers["X-RateLimit-Limit"] == "300"
        refused = await http.post(
            "/api/v1/apps", data={"client_name": "bot", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob"}
        )
        assert refused.status_code == 429
        assert "Retry-After" not in refused.headers
        token = fake.issue_token("alice")
        fake.spend_rate_budget("token", 295, who=token)
        paced = await http.get("/api/v1/accounts/verify_credentials", headers=bearer(token))
        assert (paced.headers["X-RateLimit-Limit"], paced.headers["X-RateLimit-Remaining"]) == ("300", "4")


@pytest.mark.parametrize(("profile", "status"), [(GOTOSOCIAL, 401), (MASTODON, 403)])
async def test_an_unconfirmed_login_is_refused_per_server(profile: Profile, status: int) -> None:
    async with server(profile) as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        token = fake.issue_token("alice")
        fake.user("alice").confirmed = False
        answer = await http.get("/api/v1/accounts/verify_credentials", headers=bearer(token))
    assert answer.status_code == status
    if status == 403:
        assert answer.json() == {"error": "Your login is missing a confirmed e-mail address"}


async def test_revoking_an_unknown_token_where_the_server_says_403() -> None:
    iceshrimp_like = dataclasses.replace(MASTODON, name="iceshrimp", revoke_unknown_token_status=403)
    async with server(iceshrimp_like) as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        app = await register(http, "read")
        form = {"client_id": app["client_id"], "client_secret": app["client_secret"], "token": "GONE" * 12}
        answer = await http.post("/oauth/revoke", data=form)
    assert answer.status_code == 403


# -- pacing -------------------------------------------------------------------------------------------------


async def test_a_first_connect_is_not_held_up_by_a_nearly_spent_registration_bucket(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    """Mastodon allows 5 app registrations per 10 minutes per IP. With one left, the registration answer
    says "0 of 5 left, reset in up to 10 minutes"; the code exchange and the calls after it are counted
    elsewhere and must not wait for that window (the command deadline is far shorter)."""
    sleep = FakeSleep()
    async with server(MASTODON) as fake, fedi_client(pacers=PacerRegistry(sleep=sleep)) as client:
        pin_rate_windows(fake)
        fake.spend_rate_budget("apps", 4)
        flows, _ = flows_for(sessions, keyring, client, Relay())
        started = await flows.start(ALICE, fake.base_url, (), ALICE_DM)
        assert started.code_minutes == 10  # Mastodon keeps a code 10 minutes
        code = await fake.authorize(started.authorize_url, EMAIL, PW)
        connected = await flows.complete(ALICE, ALICE_DM, code)
        assert connected.account.acct.startswith("alice@")
        assert sleep.calls == []  # not one wait on the way
        # The registration bucket itself is spent: another registration is refused at once, with the
        # wait in words, without asking the server (no 429) and without sleeping through the deadline.
        with pytest.raises(RateLimitedError, match="minutes"):
            await flows.start(BOB, fake.base_url, ("read:notifications", "profile"), BOB_DM)
        assert fake.requests_to("/api/v1/apps") == 1
        assert sleep.calls == []


async def test_gotosocial_keeps_one_budget_for_every_caller(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    pacers = PacerRegistry(sleep=FakeSleep())
    async with server(GOTOSOCIAL) as fake, fedi_client(pacers=pacers) as client:
        flows, _ = flows_for(sessions, keyring, client, Relay())
        started = await flows.start(ALICE, fake.base_url, (), ALICE_DM)
        assert started.code_minutes == 5
        code = await fake.authorize(started.authorize_url, EMAIL, PW)
        await flows.complete(ALICE, ALICE_DM, code)
    # probe, nodeinfo, exchange, verify and the first page share one pacer; the registration has its own
    assert len(pacers) == 2


# -- token reuse --------------------------------------------------------------------------------------------


async def connect(flows: ConnectFlows, fake: FakeGoToSocial, user: str, room: str) -> str:
    started = await flows.start(user, fake.base_url, (), room)
    code = await fake.authorize(started.authorize_url, EMAIL, PW)
    return (await flows.complete(user, room, code)).account.token


async def test_two_matrix_users_sharing_a_mastodon_account_both_relay_until_each_revokes(
    h: Harness,
) -> None:
    async with server(MASTODON) as fake:
        fake.notify("alice", "follow", "carol@remote.example")  # older: each relay starts after it
        manager = h.manager()
        await manager.start()
        flows, accounts = flows_for(h.sessions, h.keyring, h.client, manager)
        await h.set_dm(ALICE, ALICE_DM)
        await h.set_dm(BOB, BOB_DM)
        alices = await connect(flows, fake, ALICE, ALICE_DM)
        bobs = await connect(flows, fake, BOB, BOB_DM)
        assert alices == bobs  # Mastodon handed out the same token

        fake.notify("alice", "mention", "carol@remote.example", status_text="first")
        await wait_until(lambda: sum("first" in b for b in h.sender.bodies()) == 2, what="both relayed")

        [outcome] = await accounts.revoke(ALICE, None)
        assert outcome.kept_for_others == 1
        assert not outcome.revoked_on_server
        assert fake.active_tokens("alice") == [bobs]  # still alive on the server

        fake.notify("alice", "mention", "carol@remote.example", status_text="second")
        await wait_until(
            lambda: any(e.room_id == BOB_DM and "second" in e.body for e in h.sender.events),
            what="bob's relay to go on",
        )
        [last] = await accounts.revoke(BOB, None)
        assert last.revoked_on_server  # the last connection: now it is revoked
        assert fake.active_tokens("alice") == []
    assert not any(e.room_id == ALICE_DM and "second" in e.body for e in h.sender.events)


async def test_a_failed_reconnect_does_not_revoke_the_token_a_working_connection_uses(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with server(MASTODON) as fake, fedi_client() as client:
        flows, accounts = flows_for(sessions, keyring, client, Relay())
        token = await connect(flows, fake, ALICE, ALICE_DM)
        again = await flows.start(ALICE, fake.base_url, (), ALICE_DM)
        code = await fake.authorize(again.authorize_url, EMAIL, PW)
        fake.faults.status_override["/api/v1/accounts/verify_credentials"] = 503  # the re-connect fails
        with pytest.raises(Exception, match="not available"):
            await flows.complete(ALICE, ALICE_DM, code)
        del fake.faults.status_override["/api/v1/accounts/verify_credentials"]
        assert fake.active_tokens("alice") == [token]  # the same token: kept, not revoked
        [stored] = await accounts.for_user(ALICE)
        assert stored.token == token


async def test_gotosocial_issues_a_new_token_and_the_failed_one_is_revoked(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with server(GOTOSOCIAL) as fake, fedi_client() as client:
        flows, _ = flows_for(sessions, keyring, client, Relay())
        token = await connect(flows, fake, ALICE, ALICE_DM)
        again = await flows.start(ALICE, fake.base_url, (), ALICE_DM)
        code = await fake.authorize(again.authorize_url, EMAIL, PW)
        fake.faults.status_override["/api/v1/accounts/verify_credentials"] = 503
        with pytest.raises(Exception, match="not available"):
            await flows.complete(ALICE, ALICE_DM, code)
        assert fake.active_tokens("alice") == [token]  # the new one was revoked, the stored one kept


# -- per-server wording -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "error", "words"),
    [(MASTODON, InactiveLoginError, "confirmed its e-mail"), (GOTOSOCIAL, TokenRejectedError, "rejected")],
)
async def test_an_unconfirmed_login_is_not_called_a_missing_scope(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    profile: Profile,
    error: type[Exception],
    words: str,
) -> None:
    async with server(profile) as fake, fedi_client() as client:
        flows, _ = flows_for(sessions, keyring, client, Relay())
        started = await flows.start(ALICE, fake.base_url, (), ALICE_DM)
        code = await fake.authorize(started.authorize_url, EMAIL, PW)
        fake.user("alice").confirmed = False
        with pytest.raises(error, match=words) as info:
            await flows.complete(ALICE, ALICE_DM, code)
    assert "scope" not in str(info.value)


async def test_least_privilege_scopes_stream_on_mastodon_but_not_on_gotosocial(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    for profile, streams in ((MASTODON, True), (GOTOSOCIAL, False)):
        async with server(profile) as fake, fedi_client() as client:
            flows, _ = flows_for(sessions, keyring, client, Relay())
            user = f"@{profile.name}:matrix.test"
            started = await flows.start(user, fake.base_url, ("read:notifications", "profile"), ALICE_DM)
            code = await fake.authorize(started.authorize_url, EMAIL, PW)
            connected = await flows.complete(user, ALICE_DM, code)
        assert connected.streaming_possible is streams, profile.name


# -- what the user reads ----------------------------------------------------------------------------------


@dataclass
class Chat:
    """A command context that records the replies (the router's seam)."""

    sender: str
    room_id: str
    prefix: str = "!gts"
    replies: list[str] = field(default_factory=list)

    async def reply(self, reply: RichText) -> None:
        self.replies.append(reply.plain)


@pytest.mark.parametrize(
    ("profile", "words"),
    [
        (GOTOSOCIAL, "Codes expire after about 5 minutes"),
        (MASTODON, "Codes expire after about 10 minutes"),
        (dataclasses.replace(GOTOSOCIAL, software="someserver"), "only valid for a few minutes"),
    ],
)
async def test_the_connect_reply_says_how_long_this_server_keeps_a_code(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, profile: Profile, words: str
) -> None:
    async with server(profile) as fake, fedi_client() as client:
        flows, accounts = flows_for(sessions, keyring, client, Relay())
        commands = BotCommands(flows=flows, accounts=accounts, clock=utc_now)
        chat = Chat(ALICE, ALICE_DM)
        await commands.connect(chat, (fake.base_url,))
    [reply] = chat.replies
    assert words in reply


async def test_revoke_says_when_the_token_stays_alive_for_another_connection(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with server(MASTODON) as fake, fedi_client() as client:
        flows, accounts = flows_for(sessions, keyring, client, Relay())
        await connect(flows, fake, ALICE, ALICE_DM)
        await connect(flows, fake, BOB, BOB_DM)
        commands = BotCommands(flows=flows, accounts=accounts, clock=utc_now)
        alices, bobs = Chat(ALICE, ALICE_DM), Chat(BOB, BOB_DM)
        await commands.revoke(alices, ())
        await commands.revoke(bobs, ())
    assert "stays valid on the server because another connection" in alices.replies[0]
    assert "the token is revoked on the server" in bobs.replies[0]


@pytest.mark.parametrize(
    ("profile", "n_type", "words"),
    [
        (MASTODON, "severed_relationships", "cut some of your follow relationships with blocked.example"),
        (MASTODON, "moderation_warning", "moderators sent you a notice: a warning"),
        (MASTODON, "quote", "quoted your post"),
        (MASTODON, "quoted_update", "edited a post that quotes yours"),
        (MASTODON, "annual_report", "Your annual report for"),
        (AKKOMA, "move", "moved to moved (@moved@new.example)"),
        (AKKOMA, "pleroma:emoji_reaction", "reacted with \N{PARTY POPPER} to your post"),
        (ICESHRIMP, "reaction", "reacted with \N{PARTY POPPER} to your post"),
        (ICESHRIMP, "bite", "carol (@carol@remote.example) bit you"),
    ],
)
async def test_each_servers_own_types_arrive_with_words_of_their_own(
    h: Harness, profile: Profile, n_type: str, words: str
) -> None:
    async with server(profile) as fake:
        fake.notify("alice", "follow", "carol@remote.example")  # relaying starts after this one
        await h.add_account(fake, "alice", cursor=fake.notifications("alice")[0]["id"])
        await h.manager().start()
        fake.notify("alice", n_type, "carol@remote.example")
        await wait_until(lambda: bool(h.sender.events), what="the notification")
    [event] = h.sender.events
    assert words in event.body
    assert "New notification" not in event.body


async def test_a_login_disabled_later_stops_the_relay_with_its_own_words(h: Harness) -> None:
    async with server(MASTODON) as fake:
        fake.notify("alice", "follow", "carol@remote.example")
        await h.add_account(fake, "alice", cursor=fake.notifications("alice")[0]["id"])
        fake.user("alice").disabled = True  # Mastodon now answers 403 "Your login is currently disabled"
        await h.manager(config=RelayConfig(streaming=False, poll_interval=10.0)).start()
        await wait_until(lambda: bool(h.notified.calls), what="the user to be told")
    [(user, plain, _)] = h.notified.calls
    assert user == "@alice:example.org"
    assert "login is unconfirmed, waiting for approval, or disabled" in plain
    assert "not allowed to read notifications" not in plain


async def test_a_403_for_a_token_the_server_no_longer_knows_counts_as_revoked(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    """Iceshrimp.NET answers /oauth/revoke with 403 for an unknown token (one revoked already)."""
    iceshrimp_like = dataclasses.replace(MASTODON, name="iceshrimp", revoke_unknown_token_status=403)
    async with server(iceshrimp_like) as fake, fedi_client() as client:
        flows, accounts = flows_for(sessions, keyring, client, Relay())
        await connect(flows, fake, ALICE, ALICE_DM)
        fake.revoke_all("alice")  # the user removed the app in the server's settings
        [outcome] = await accounts.revoke(ALICE, None)
    assert outcome.revoked_on_server
    assert outcome.problem is None


async def test_a_403_for_another_apps_live_token_is_still_reported(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with server(GOTOSOCIAL) as fake, fedi_client() as client:
        flows, accounts = flows_for(sessions, keyring, client, Relay())
        await connect(flows, fake, ALICE, ALICE_DM)
        [app] = list(fake.apps.values())
        app.client_secret = "changed-on-the-server"  # the server no longer takes the bot's credentials
        [outcome] = await accounts.revoke(ALICE, None)
    assert not outcome.revoked_on_server
    assert outcome.problem is not None
    assert "another app" in outcome.problem
