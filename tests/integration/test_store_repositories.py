"""Repository behaviour on a real, migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.fediverse.scopes import scope_string
from bot.store.keyring import KeyRing
from bot.store.records import AccountId, AccountState, AppId, utc_now
from bot.store.repositories import Repositories
from tests.waiting import wait_until

ALICE, BOB = "@alice:example.org", "@bob:example.org"
INSTANCE = "https://example.org"
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _app(repos: Repositories, instance: str = INSTANCE) -> AppId:
    return (
        await repos.apps.add(instance=instance, scopes="read", client_id="cid", client_secret="csecret")
    ).id


async def test_apps_get_by_instance_and_normalized_scopes(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        added = await repos.apps.add(
            instance=INSTANCE, scopes="write read read", client_id="cid-1", client_secret="secret-1"
        )
        assert added.scopes == "read write"
    async with sessions() as s:
        repos = Repositories(s, keyring, clock)
        got = await repos.apps.get(INSTANCE, ["write", "read"])
        assert got == added
        assert got is not None
        assert got.client_secret == "secret-1"
        assert got.created_at == T0
        assert "secret-1" not in repr(got)
        assert await repos.apps.get(INSTANCE, "read") is None
        assert await repos.apps.get("https://other.example", "read write") is None
        assert await repos.apps.get_by_id(added.id) == added


async def test_apps_unique_per_instance_and_scopes(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with sessions() as s:
        repos = Repositories(s, keyring)
        await repos.apps.add(instance=INSTANCE, scopes="read", client_id="a", client_secret="x")
        await repos.apps.add(instance=INSTANCE, scopes="read write", client_id="b", client_secret="y")
        with pytest.raises(IntegrityError):
            await repos.apps.add(instance=INSTANCE, scopes="read", client_id="c", client_secret="z")


async def test_several_accounts_per_user_and_upsert(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        app = await _app(repos)
        other_app = await _app(repos, "https://other.example")
        a1 = await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=app,
            fediverse_account_id="01A",
            acct="alice@example.org",
            token="token-a1",
            scopes="read",
        )
        a2 = await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance="https://other.example",
            app_id=other_app,
            fediverse_account_id="7",
            acct="alice@other.example",
            token="token-a2",
            scopes=["read"],
        )
        b1 = await repos.accounts.upsert(
            matrix_user_id=BOB,
            instance=INSTANCE,
            app_id=app,
            fediverse_account_id="01B",
            acct="bob@example.org",
            token="token-b1",
            scopes="read",
        )
        assert a1.state is AccountState.ACTIVE
        assert a1.cursor is None
        assert a1.notify_types is None
        assert "token-a1" not in repr(a1)
        await repos.accounts.set_cursor(a1.id, "01HXYZ")
        await repos.accounts.set_notify_types(a1.id, ["mention", "follow", "mention"])

    clock.advance(60)
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert [a.acct for a in await repos.accounts.list_for_user(ALICE)] == [
            "alice@example.org",
            "alice@other.example",
        ]
        assert await repos.accounts.count_for_user(ALICE) == 2
        assert [a.token for a in await repos.accounts.list_for_user(BOB)] == ["token-b1"]
        # Connecting the same account again refreshes the token but keeps the cursor and filter.
        again = await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=app,
            fediverse_account_id="01A",
            acct="alice@example.org",
            token="token-a1-new",
            scopes="read write",
        )
        assert again.id == a1.id
        assert again.token == "token-a1-new"
        assert again.scopes == "read write"
        assert again.cursor == "01HXYZ"
        assert again.notify_types == ("follow", "mention")
        assert again.created_at == T0
        assert again.updated_at == T0 + timedelta(seconds=60)

    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.accounts.set_state(a2.id, AccountState.BROKEN)
        assert [a.id for a in await repos.accounts.list_active()] == [a1.id, b1.id]
        assert await repos.accounts.set_notify_types(a1.id, None)
        assert not await repos.accounts.set_cursor(AccountId(a1.id + 1000), "x")
        got = await repos.accounts.get(a2.id)
        assert got is not None
        assert got.state is AccountState.BROKEN
        assert (await repos.accounts.get(a1.id)).notify_types is None  # type: ignore[union-attr]

    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.accounts.delete(b1.id)
        assert not await repos.accounts.delete(b1.id)
        assert await repos.accounts.delete_all_for_user(ALICE) == 2
        assert await repos.accounts.list_for_user(ALICE) == []
        assert await repos.accounts.get(a1.id) is None


async def test_account_state_is_constrained(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with sessions() as s:
        repos = Repositories(s, keyring)
        app = await _app(repos)
        acc = await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=app,
            fediverse_account_id="1",
            acct="a@example.org",
            token="t",
            scopes="read",
        )
        with pytest.raises(IntegrityError):
            await s.execute(text("UPDATE accounts SET state = 'exploded' WHERE id = :id"), {"id": acc.id})


async def test_app_in_use_cannot_be_deleted_but_flows_go_with_it(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        used, unused = await _app(repos), await _app(repos, "https://unused.example")
        await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=used,
            fediverse_account_id="1",
            acct="a@example.org",
            token="t",
            scopes="read",
        )
        flow = await repos.flows.add(
            matrix_user_id=BOB,
            instance="https://unused.example",
            app_id=unused,
            scopes="read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(minutes=10),
        )
    async with sessions() as s:
        with pytest.raises(IntegrityError):
            async with s.begin():
                await Repositories(s, keyring).apps.delete(used)
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        assert await repos.apps.delete(unused)
        assert await repos.flows.get(flow.id) is None
        assert await repos.apps.get_by_id(used) is not None


async def test_unused_app_registrations_are_pruned(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        with_account, with_flow = await _app(repos), await _app(repos, "https://flow.example")
        unused = await _app(repos, "https://unused.example")
        await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=with_account,
            fediverse_account_id="1",
            acct="a@example.org",
            token="t",
            scopes="read",
        )
        await repos.flows.add(
            matrix_user_id=BOB,
            instance="https://flow.example",
            app_id=with_flow,
            scopes="read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(minutes=10),
        )
    async with sessions() as s, s.begin():
        apps = Repositories(s, keyring).apps
        assert await apps.delete_unused(created_before=utc_now() - timedelta(days=1)) == 0  # too recent
        assert await apps.delete_unused(created_before=utc_now() + timedelta(seconds=1)) == 1
        assert await apps.get_by_id(unused) is None
        assert await apps.get_by_id(with_account) is not None
        assert await apps.get_by_id(with_flow) is not None


async def test_flows_single_use_and_expiry(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        app = await _app(repos)
        f1 = await repos.flows.add(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=app,
            scopes="write read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(minutes=10),
        )
        clock.advance(1)
        f2 = await repos.flows.add(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=app,
            scopes="read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(minutes=10),
        )
        await repos.flows.add(
            matrix_user_id=BOB,
            instance=INSTANCE,
            app_id=app,
            scopes="read",
            dm_room_id="!dm2:example.org",
            ttl=timedelta(minutes=1),
        )
    assert f1.scopes == "read write"
    assert f1.expires_at == T0 + timedelta(minutes=10)
    assert len(f1.oauth_state) >= 40
    assert f1.oauth_state != f2.oauth_state
    assert f1.oauth_state not in repr(f1)
    # The PKCE verifier is random per flow (not derived from the public state) and a secret of the flow.
    assert len(f1.pkce_verifier) == 43
    assert f1.pkce_verifier != f2.pkce_verifier
    assert f1.pkce_verifier not in repr(f1)
    assert f1.pkce_verifier not in f1.oauth_state

    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert [f.id for f in await repos.flows.get_for_user(ALICE)] == [f2.id, f1.id]
        assert await repos.flows.count_for_user(ALICE) == 2
        assert await repos.flows.get_by_state(f1.oauth_state) == f1
        # Consuming deletes the flow and stores the account in the same transaction.
        consumed = await repos.flows.consume(f1.id)
        assert consumed == f1
        await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=app,
            fediverse_account_id="1",
            acct="alice@example.org",
            token="t",
            scopes=consumed.scopes,
        )
        assert await repos.flows.consume(f1.id) is None

    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.flows.consume(f1.id) is None
        assert await repos.flows.get(f1.id) is None
        assert len(await repos.accounts.list_for_user(ALICE)) == 1

    clock.advance(120)  # Bob's flow (1 minute) has expired, Alice's (10 minutes) has not
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.flows.get_for_user(BOB) == []
        assert await repos.flows.count_for_user(BOB) == 0
        assert await repos.flows.delete_expired() == 1
        assert await repos.flows.count_for_user(ALICE) == 1
        assert await repos.flows.delete_expired(clock.now + timedelta(hours=1)) == 1
        assert await repos.flows.get(f2.id) is None


async def test_expired_flow_is_still_returned_by_consume(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        flow = await repos.flows.add(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=await _app(repos),
            scopes="read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(seconds=30),
        )
    clock.advance(31)
    async with sessions() as s, s.begin():
        consumed = await Repositories(s, keyring, clock).flows.consume(flow.id)
        assert consumed is not None
        assert consumed.expired(clock.now)
        assert not consumed.expired(T0)


async def test_two_concurrent_consumers_get_the_flow_once(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        flow = await repos.flows.add(
            matrix_user_id=ALICE,
            instance=INSTANCE,
            app_id=await _app(repos),
            scopes="read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(minutes=10),
        )
    second_issued = asyncio.Event()

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM PENDING_FLOWS"):
            second_issued.set()

    async with sessions() as first, sessions() as second:
        await first.begin()
        assert await Repositories(first, keyring).flows.consume(flow.id) == flow
        # The second consumer blocks on the first one's lock until it commits, then finds nothing.
        event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
        try:
            racing = asyncio.create_task(Repositories(second, keyring).flows.consume(flow.id))
            await asyncio.wait_for(second_issued.wait(), 60)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        if engine.dialect.name == "postgresql":  # the server can say that it waits for the lock
            await wait_until(lambda: _someone_waits_for_a_lock(engine), what="the second DELETE to wait")
        assert not racing.done()
        await first.commit()
        assert await racing is None
        await second.commit()


async def _someone_waits_for_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return bool((await conn.execute(query)).scalar_one())


async def test_dm_rooms(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.dm_rooms.get(ALICE) is None
        await repos.dm_rooms.set(ALICE, "!one:example.org")
        await repos.dm_rooms.set(BOB, "!two:example.org")
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.dm_rooms.get(ALICE) == "!one:example.org"
        await repos.dm_rooms.set(ALICE, "!three:example.org")
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.dm_rooms.get(ALICE) == "!three:example.org"
        assert await repos.dm_rooms.delete(ALICE)
        assert not await repos.dm_rooms.delete(ALICE)
        assert await repos.dm_rooms.get(ALICE) is None
        assert await repos.dm_rooms.get(BOB) == "!two:example.org"


async def test_matrix_session(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.matrix_session.get() is None
        assert not await repos.matrix_session.save_sync_token("s1")
        saved = await repos.matrix_session.save(
            user_id="@bot:example.org", device_id="DEV1", access_token="syt_1"
        )
        assert "syt_1" not in repr(saved)
        assert await repos.matrix_session.save_sync_token("s42")
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        got = await repos.matrix_session.get()
        assert got is not None
        assert (got.user_id, got.device_id, got.access_token, got.sync_token) == (
            "@bot:example.org",
            "DEV1",
            "syt_1",
            "s42",
        )
        # Same device, new token: the sync position stays. New device: it starts over.
        await repos.matrix_session.save(user_id="@bot:example.org", device_id="DEV1", access_token="syt_2")
        assert (await repos.matrix_session.get()).sync_token == "s42"  # type: ignore[union-attr]
        await repos.matrix_session.save(user_id="@bot:example.org", device_id="DEV2", access_token="syt_3")
        got = await repos.matrix_session.get()
        assert got is not None
        assert got.sync_token is None
        assert got.access_token == "syt_3"
    async with sessions() as s:
        with pytest.raises(IntegrityError):
            await s.execute(
                text(
                    "INSERT INTO matrix_session (id, user_id, device_id, access_token_encrypted, updated_at) "
                    "VALUES (2, 'u', 'd', 'x', :now)"
                ),
                {"now": T0},
            )


async def test_handled_events_once_and_pruned(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: FakeClock
) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.handled_events.mark_handled("$old", "!r:example.org")
        assert not await repos.handled_events.mark_handled("$old", "!r:example.org")
    clock.advance(3600)
    async with sessions() as s, s.begin():  # a "restart": a new session still knows
        repos = Repositories(s, keyring, clock)
        assert not await repos.handled_events.mark_handled("$old", "!r:example.org")
        assert await repos.handled_events.mark_handled("$new", "!r:example.org")
        assert await repos.handled_events.prune(older_than=clock.now - timedelta(minutes=30)) == 1
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, clock)
        assert await repos.handled_events.mark_handled("$old", "!r:example.org")
        assert not await repos.handled_events.mark_handled("$new", "!r:example.org")


async def test_timestamps_are_aware_utc(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> None:
    other_zone = datetime(2026, 1, 2, 5, 4, 5, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring, lambda: other_zone)
        app = await repos.apps.add(instance=INSTANCE, scopes="read", client_id="c", client_secret="s")
    async with sessions() as s:
        got = await Repositories(s, keyring).apps.get_by_id(app.id)
        assert got is not None
        assert got.created_at.tzinfo is UTC
        assert got.created_at == other_zone
        assert got.created_at.hour == 5
    async with sessions() as s:
        with pytest.raises(StatementError, match="naive"):
            await Repositories(s, keyring, lambda: datetime(2026, 1, 1)).dm_rooms.set(ALICE, "!r:x")


def test_scopes_are_stored_in_one_canonical_form() -> None:
    assert scope_string("write  read read") == "read write"
    assert scope_string(["read", "write:statuses read"]) == "read write:statuses"
    assert scope_string("") == ""


async def test_accounts_sharing_a_token_are_found_by_fingerprint(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    """Mastodon gives two connections of one account the same token; the store finds them without the
    token in any column but its ciphertext; rows stored before fingerprints existed still match."""
    shared = "SHARED-TOKEN-0123456789"
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await _app(repos)
        ids = []
        for user, token in ((ALICE, shared), (BOB, shared), ("@carol:example.org", "OTHER-TOKEN-012345")):
            account = await repos.accounts.upsert(
                matrix_user_id=user,
                instance=INSTANCE,
                app_id=app,
                fediverse_account_id="01A",
                acct="alice@example.org",
                token=token,
                scopes="read",
            )
            ids.append(account.id)
        # BOB's row as an older version stored it: no fingerprint yet
        await s.execute(text("UPDATE accounts SET token_fingerprint = NULL WHERE id = :id"), {"id": ids[1]})
    async with sessions() as s, s.begin():
        accounts = Repositories(s, keyring).accounts
        assert await accounts.ids_using_token(INSTANCE, shared) == ids[:2]
        assert await accounts.ids_using_token("https://other.example", shared) == []
        assert await accounts.ids_using_token(INSTANCE, "NEVER-STORED-TOKEN") == []
    async with sessions() as s:
        rows = (await s.execute(text("SELECT token_fingerprint FROM accounts ORDER BY id"))).all()
    fingerprints = [row[0] for row in rows]
    assert fingerprints[1] is None  # a read does not write
    assert fingerprints[0] == keyring.fingerprint("account-token", shared) != fingerprints[2]
    assert all(shared not in (f or "") for f in fingerprints)


def test_a_fingerprint_needs_the_key_file_and_survives_rotation() -> None:
    ring = KeyRing.generate()
    print_ = ring.fingerprint("account-token", "TOKEN")
    assert ring.with_new_current_key().fingerprint("account-token", "TOKEN") == print_
    assert KeyRing.generate().fingerprint("account-token", "TOKEN") != print_
    assert ring.fingerprint("app-secret", "TOKEN") != print_
