"""`connect … interactive`, `allow-actions` and `status` through the router and the command layer, against
every profile of the fake and a real database: the least action scopes are asked for (on an app registered
for them), the new token replaces the read-only one, the old one is revoked, and status says who can act."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.accounts import AccountsService
from bot.dm_registry import DmDirectory
from bot.errors import InsufficientScopeError
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import parse_instance
from bot.router import Router
from bot.store.keyring import KeyRing
from tests.fakes.gotosocial import PROFILES, AuthorizeError, FakeGoToSocial, Profile
from tests.fakes.gotosocial.testkit import authorize_url
from tests.fakes.matrix import RecordingMatrix
from tests.integration.fedi_support import fedi_client
from tests.integration.router_support import Relay, Rooms, command_side, message

ALICE = "@alice:hs.test"
DM = "!dm:hs.test"
EMAIL, PW = "alice@example.org", "Long-Strong-Passw0rd!"
BOB_EMAIL = "bob@example.org"
ACTION_SCOPES = {"write:statuses", "write:favourites", "write:follows"}
ALL = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))


@dataclass
class Chat:
    fake: FakeGoToSocial
    client: FediverseClient
    router: Router
    matrix: RecordingMatrix
    accounts: AccountsService
    events: int = 0

    async def say(self, body: str) -> str:
        """Send `body` in the DM and return the bot's reply (it waits for the command to finish)."""
        before = len(self.matrix.messages())
        self.events += 1
        await self.router.handle(message(ALICE, DM, body, event=f"$e{self.events}"))
        await self.router.settled()
        replies = self.matrix.messages()[before:]
        assert replies, f"no reply to {body!r}"
        return "\n".join(text for _room, text in replies)

    async def connect(self, *words: str) -> str:
        """Run `connect`, authorize as alice, paste the code; returns the final reply."""
        started = await self.say(" ".join(["!gts connect", self.fake.base_url, *words]))
        return await self.authorize_and_paste(started)

    async def authorize(self, reply: str, email: str = EMAIL) -> str:
        """Open the link in `reply`, sign in (as alice unless told otherwise) and allow; returns the code."""
        url = re.search(r"https?://\S+/oauth/authorize\?\S+", reply)
        assert url is not None, reply
        return await self.fake.authorize(url.group(0).rstrip(").,"), email, PW)

    async def authorize_and_paste(self, reply: str, email: str = EMAIL) -> str:
        return await self.say(await self.authorize(reply, email))


@pytest.fixture
async def chat(
    profile: Profile, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> AsyncIterator[Chat]:
    async with FakeGoToSocial(profile=profile) as fake, fedi_client() as client:
        fake.add_user("alice", EMAIL, PW)
        matrix = RecordingMatrix()
        dms = DmDirectory(sessions, Rooms({(DM, ALICE)}))
        await dms.record(ALICE, DM)
        side = command_side(
            sessions, keyring, client, matrix=matrix, dms=dms, relay=Relay(), commands_per_minute=50
        )
        try:
            yield Chat(fake, client, side.router, matrix, side.accounts)
        finally:
            await side.router.aclose(grace=60)


def scopes_asked(reply: str) -> set[str]:
    url = re.search(r"https?://\S+/oauth/authorize\?\S+", reply)
    assert url is not None
    return set(parse_qs(urlsplit(url.group(0)).query)["scope"][0].split())


async def favourite_with_stored_token(chat: Chat) -> None:
    [account] = await chat.accounts.for_user(ALICE)
    status_id = chat.fake.seed_status("bob@remote.example", "a post")["id"]
    instance = parse_instance(chat.fake.base_url, allow_http=True)
    await chat.client.actions.favourite(instance, account.token, status_id)
    assert chat.fake.favourited("alice", status_id)


@ALL
async def test_connect_interactive_asks_for_read_and_the_least_action_scopes(chat: Chat) -> None:
    started = await chat.say(f"!gts connect {chat.fake.base_url} interactive")
    assert scopes_asked(started) == {"read"} | ACTION_SCOPES
    assert "favourite, boost" in started
    # Its own app registration with exactly those scopes: GoToSocial refuses an authorization that asks
    # for more than the app registered.
    assert [sorted(app.scopes) for app in chat.fake.apps.values()] == [sorted({"read"} | ACTION_SCOPES)]
    done = await chat.authorize_and_paste(started)
    assert "Connected as" in done
    assert "I can act for this account" in done
    [account] = await chat.accounts.for_user(ALICE)
    assert set(account.scopes.split()) == {"read"} | ACTION_SCOPES
    assert account.software == chat.fake.profile.software.lower()  # which scope names the server takes
    await favourite_with_stored_token(chat)
    assert "can act" in await chat.say("!gts status")


@ALL
async def test_a_plain_connect_stays_read_only_and_status_says_so(chat: Chat) -> None:
    done = await chat.connect()
    assert "Connected as" in done
    assert "I can act" not in done
    [account] = await chat.accounts.for_user(ALICE)
    assert account.scopes == "read"
    status = await chat.say("!gts status")
    assert "read-only (allow-actions lets it act)" in status
    with pytest.raises(InsufficientScopeError):
        await favourite_with_stored_token(chat)


@ALL
async def test_allow_actions_replaces_the_read_only_token_and_revokes_the_old_one(chat: Chat) -> None:
    await chat.connect()
    [before] = await chat.accounts.for_user(ALICE)
    old_token = before.token
    started = await chat.say("!gts allow-actions")
    assert scopes_asked(started) == {"read"} | ACTION_SCOPES
    assert f"Sign in as @{before.acct}" in started
    done = await chat.authorize_and_paste(started)
    assert "I can act for this account" in done
    [after] = await chat.accounts.for_user(ALICE)
    assert after.id == before.id  # the same connection, with a new token
    assert after.token != old_token
    assert set(after.scopes.split()) == {"read"} | ACTION_SCOPES
    assert chat.fake.active_tokens("alice") == [after.token]  # the read-only token is revoked
    assert old_token not in chat.fake.tokens
    await favourite_with_stored_token(chat)
    assert "can act" in await chat.say("!gts status")
    assert "can already act" in await chat.say("!gts allow-actions 1")


@ALL
async def test_allow_actions_signed_in_as_another_account_changes_nothing_and_revokes_the_new_token(
    chat: Chat,
) -> None:
    chat.fake.add_user("bob", BOB_EMAIL, PW)
    await chat.connect()
    [before] = await chat.accounts.for_user(ALICE)
    bob = "bob@" + before.acct.split("@", 1)[1]
    refused = await chat.authorize_and_paste(await chat.say("!gts allow-actions"), email=BOB_EMAIL)
    assert f"You signed in as @{bob}, but this request was for @{before.acct}" in refused
    assert f"Sign in as @{before.acct} and try again" in refused
    assert "Connected as" not in refused
    # Nothing stored: no second account, and alice's read-only token is the same and still works.
    [unchanged] = await chat.accounts.for_user(ALICE)
    assert (unchanged.id, unchanged.token, unchanged.scopes) == (before.id, before.token, "read")
    assert chat.fake.active_tokens("alice") == [before.token]
    # The server issued bob a token for the code, and the bot revoked it at once.
    assert chat.fake.requests_to("/oauth/token", "POST") == 2
    assert chat.fake.requests_to("/oauth/revoke", "POST") == 1
    assert chat.fake.active_tokens("bob") == []
    assert chat.fake.write_calls == []
    # Trying again as the right account upgrades it.
    done = await chat.authorize_and_paste(await chat.say("!gts allow-actions"))
    assert "I can act for this account" in done
    [after] = await chat.accounts.for_user(ALICE)
    assert after.id == before.id
    assert chat.fake.active_tokens("alice") == [after.token]


@ALL
async def test_signing_in_as_another_connected_account_leaves_its_connection_working(chat: Chat) -> None:
    """Mastodon and Akkoma hand the same token again for the same account, app and scopes: the token a
    mismatched upgrade got may be the one another stored connection uses, and is then kept."""
    chat.fake.add_user("bob", BOB_EMAIL, PW)
    await chat.connect()
    assert "Connected as" in await chat.authorize_and_paste(
        await chat.say(f"!gts connect {chat.fake.base_url} interactive"), email=BOB_EMAIL
    )
    before = await chat.accounts.for_user(ALICE)
    alice = next(a for a in before if a.acct.startswith("alice@"))
    refused = await chat.authorize_and_paste(
        await chat.say(f"!gts allow-actions @{alice.acct}"), email=BOB_EMAIL
    )
    assert f"Sign in as @{alice.acct} and try again" in refused
    assert await chat.accounts.for_user(ALICE) == before
    [bob_token] = [a.token for a in before if a.acct.startswith("bob@")]
    assert chat.fake.active_tokens("bob") == [bob_token]
    assert chat.fake.active_tokens("alice") == [alice.token]


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_an_upgrade_waiting_for_its_code_ends_when_its_account_is_revoked(chat: Chat) -> None:
    await chat.connect()
    started = await chat.say("!gts allow-actions")
    assert "Revoked @" in await chat.say("!gts revoke")
    code = await chat.authorize(started)
    assert "No connection is waiting for a code" in await chat.say(f"!gts code {code}")
    assert chat.fake.requests_to("/oauth/token", "POST") == 1  # the code was never redeemed
    assert await chat.accounts.for_user(ALICE) == []
    assert chat.fake.active_tokens("alice") == []


@ALL
async def test_connect_interactive_for_a_connected_read_only_account_upgrades_it_in_place(chat: Chat) -> None:
    await chat.connect()
    [before] = await chat.accounts.for_user(ALICE)
    done = await chat.connect("interactive")
    assert "I can act for this account" in done
    [after] = await chat.accounts.for_user(ALICE)  # not a second connection of the same account
    assert after.id == before.id
    assert after.token != before.token
    assert set(after.scopes.split()) == {"read"} | ACTION_SCOPES
    assert chat.fake.active_tokens("alice") == [after.token]  # the read-only token is revoked
    await favourite_with_stored_token(chat)


@ALL
async def test_allow_actions_keeps_least_privilege_relay_scopes(chat: Chat) -> None:
    await chat.connect("read:notifications", "profile")
    started = await chat.say("!gts allow-actions @" + (await chat.accounts.for_user(ALICE))[0].acct)
    # Iceshrimp.NET knows no `profile`: the bot asked it for `read:accounts` from the start
    account_scope = "read:accounts" if chat.fake.profile.name == "iceshrimp" else "profile"
    assert scopes_asked(started) == {"read:notifications", account_scope} | ACTION_SCOPES


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_allow_actions_without_an_account_or_with_an_unknown_one_is_refused(chat: Chat) -> None:
    assert "no connected accounts" in await chat.say("!gts allow-actions")
    await chat.connect()
    assert "None of your accounts matches" in await chat.say("!gts allow-actions @nobody@nowhere.example")
    assert chat.fake.write_calls == []


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_help_lists_the_new_commands(chat: Chat) -> None:
    help_text = await chat.say("!gts help")
    assert "allow-actions [<account>]" in help_text
    assert "connect <instance> [interactive|scopes]" in help_text


@ALL
async def test_the_read_only_app_could_not_have_asked_for_action_scopes(chat: Chat) -> None:
    """Why acting gets its own app registration: the server refuses scopes its app did not register."""
    await chat.connect()
    [read_app] = chat.fake.apps.values()
    assert read_app.scopes == ["read"]
    wider = authorize_url(chat.fake, {"client_id": read_app.client_id}, "read write:statuses")
    with pytest.raises(AuthorizeError) as refused:
        await chat.fake.authorize(wider, EMAIL, PW)
    assert refused.value.error == "invalid_scope"
    await chat.authorize_and_paste(await chat.say("!gts allow-actions"))
    assert sorted(sorted(app.scopes) for app in chat.fake.apps.values()) == [
        ["read"],
        sorted({"read"} | ACTION_SCOPES),
    ]
