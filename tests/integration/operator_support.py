"""Helpers of the operator-command tests: seeding every table, reading rows and secrets back, connecting
accounts on the fake GoToSocial, and running the CLI in a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.admin.dbcopy import copied_tables
from bot.cli import main
from bot.fediverse.instance import parse_instance
from bot.resources import open_database
from bot.store.action_journal import ActionKind
from bot.store.db import create_engine
from bot.store.event_map import RelayedTarget
from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxRepository
from bot.store.records import AccountRecord
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.fedi_support import fedi_client

ALICE, BOB = "@alice:test.org", "@bob:test.org"
DM = "!dm:test.org"
INSTANCE = "https://social.example"


def db_url_of(env: Mapping[str, str]) -> str:
    return f"sqlite+aiosqlite:///{env['GTS_BOT_DATA_DIR']}/gts-bot.sqlite3"


def key_file_of(env: Mapping[str, str]) -> Path:
    return Path(env["GTS_BOT_DATA_DIR"]) / "keyring.json"


async def cli(argv: list[str], env: Mapping[str, str]) -> int:
    """`gts-bot <argv>` in a thread: it runs its own event loop, while the fake server runs in ours."""
    return await asyncio.to_thread(main, argv, environ=env)


# -- seeding --------------------------------------------------------------------------------------------

SECRETS = ["app-secret-1", "token-alice", "token-bob", "syt-bot-session-token"]
SEALED_COUNT = len(SECRETS) + 2  # + the pending flow's PKCE verifier (random) and the outbox message


async def seed_every_table(url: str, ring: KeyRing) -> None:
    """At least one row in every table, secrets encrypted with `ring`."""
    async with open_database(url) as db, db.sessions() as s, s.begin():
        repos = Repositories(s, ring)
        app = await repos.apps.add(
            instance=INSTANCE, scopes="read", client_id="cid-1", client_secret=SECRETS[0]
        )
        alice = await repos.accounts.upsert(
            matrix_user_id=ALICE, instance=INSTANCE, app_id=app.id, fediverse_account_id="1",
            acct="alice@social.example", token=SECRETS[1], scopes="read",
        )  # fmt: skip
        bob = await repos.accounts.upsert(
            matrix_user_id=BOB, instance=INSTANCE, app_id=app.id, fediverse_account_id="2",
            acct="bob@social.example", token=SECRETS[2], scopes="read",
        )  # fmt: skip
        await repos.accounts.set_cursor(alice.id, "01ALICECURSOR")
        await repos.accounts.set_notify_types(bob.id, ["mention", "follow"])
        await repos.flows.add(
            matrix_user_id=ALICE, instance=INSTANCE, app_id=app.id, scopes="read", dm_room_id=DM,
            ttl=timedelta(minutes=10),
        )  # fmt: skip
        await repos.dm_rooms.set(ALICE, DM)
        await repos.matrix_session.save(user_id="@bot:test.org", device_id="DEVICE", access_token=SECRETS[3])
        await repos.handled_events.mark_handled("$event-1", DM)
        await OutboxRepository(s, ring).add(
            matrix_user_id=ALICE, room_id=DM, txn_id="txn-1", body="hello", html="<b>hello</b>",
            cursors={alice.id: "01ALICECURSOR"},
            shows=RelayedTarget(alice.id, "01ALICECURSOR", "mention", status_id="s1"),
        )  # fmt: skip
        await repos.relayed_events.add(
            event_id="$relayed-1", matrix_user_id=ALICE, room_id=DM,
            target=RelayedTarget(alice.id, "01N", "follow_request", requester_account_id="9"),
        )  # fmt: skip
        await repos.action_journal.begin(
            event_id="$reaction-1", matrix_user_id=ALICE, account_id=alice.id, action=ActionKind.FAVOURITE,
            target_id="s1", idempotency_key="k1",
        )  # fmt: skip


async def read_secrets(url: str, ring: KeyRing) -> list[str]:
    async with open_database(url) as db, db.sessions() as s:
        repos = Repositories(s, ring)
        app = await repos.apps.get(INSTANCE, "read")
        session = await repos.matrix_session.get()
        assert app is not None
        assert session is not None
        tokens = [a.token for user in (ALICE, BOB) for a in await repos.accounts.list_for_user(user)]
        return [app.client_secret, *tokens, session.access_token]


async def table_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in primary-key order (datetimes as aware UTC on both backends)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in await conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in copied_tables()
            }
    finally:
        await engine.dispose()


@dataclass
class Connected:
    gts: FakeGoToSocial
    accounts: dict[str, AccountRecord]


async def connect_accounts(
    url: str, ring: KeyRing, gts: FakeGoToSocial, who: dict[str, list[str]]
) -> Connected:
    """Connect fediverse users to Matrix users ({matrix user: [usernames]}) with tokens the fake issued to
    an app registered on it, so that revoking on the server works for real."""
    instance = parse_instance(gts.base_url, allow_http=True)
    async with fedi_client() as client:
        registration = await client.register_app(instance, ["read"], client_name="gts-bot")
    accounts: dict[str, AccountRecord] = {}
    async with open_database(url) as db, db.sessions() as s, s.begin():
        repos = Repositories(s, ring)
        app = await repos.apps.add(
            instance=instance.key, scopes="read", client_id=registration.client_id,
            client_secret=registration.client_secret,
        )  # fmt: skip
        for matrix_user, usernames in who.items():
            for username in usernames:
                gts.add_user(username)
                accounts[username] = await repos.accounts.upsert(
                    matrix_user_id=matrix_user, instance=instance.key, app_id=app.id,
                    fediverse_account_id=gts.user(username).account_id, acct=f"{username}@{gts.host}",
                    token=gts.issue_token(username, client_id=registration.client_id), scopes="read",
                )  # fmt: skip
    return Connected(gts, accounts)
