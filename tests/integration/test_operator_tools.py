"""The operator commands, run in-process through `bot.cli.main` against real SQLite and PostgreSQL
databases and the fake GoToSocial: `accounts list`, `accounts revoke`, `migrate-db`, `keys retire`."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from bot.admin.dbcopy import copy_database
from bot.resources import open_database
from bot.store.db import create_engine
from bot.store.encrypted_columns import all_readable_with, count_sealed
from bot.store.keyring import KeyRing
from bot.store.migrate import alembic_config, current_revision, head_revision
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.operator_support import (
    ALICE,
    BOB,
    DM,
    INSTANCE,
    SEALED_COUNT,
    SECRETS,
    cli,
    connect_accounts,
    db_url_of,
    key_file_of,
    read_secrets,
    seed_every_table,
    table_rows,
)
from tests.integration.relay_support import harness
from tests.pg import PostgresServer
from tests.waiting import wait_until

DB_PASSWORD = "db-pw-never-printed-0815"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A complete configuration from the environment, data under tmp_path, loopback instances allowed."""
    monkeypatch.chdir(tmp_path)
    return {
        "GTS_BOT_MATRIX__HOMESERVER": "https://matrix.test.org",
        "GTS_BOT_MATRIX__USER_ID": "@bot:test.org",
        "GTS_BOT_MATRIX__PASSWORD": "pw-never-printed-4711",
        "GTS_BOT_DATA_DIR": str(tmp_path / "data"),
        "GTS_BOT_FEDIVERSE__ALLOW_HTTP": "true",
        "GTS_BOT_FEDIVERSE__ALLOW_PRIVATE_ADDRESSES": "true",
    }


async def _new_pg_database(server: PostgresServer) -> str:
    name = f"gts_ops_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


@pytest.fixture
async def pg_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database; its URL carries a password (trust auth ignores it) so tests can
    check the commands never print it."""
    name = await _new_pg_database(postgres_server)
    server = postgres_server
    yield f"postgresql+asyncpg://{server.user}:{DB_PASSWORD}@{server.host}:{server.port}/{name}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- accounts list --------------------------------------------------------------------------------------


async def test_accounts_list_shows_every_account_and_no_secret(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ring = KeyRing.generate_file(key_file_of(env))
    await seed_every_table(db_url_of(env), ring)

    assert await cli(["accounts", "list"], env) == 0
    out = capsys.readouterr().out
    header, alice, bob = out.splitlines()
    assert header.split() == [
        "USER",
        "ACCOUNT",
        "INSTANCE",
        "STATE",
        "NOTIFY",
        "CURSOR",
        "CREATED",
        "UPDATED",
        "WORKER",
    ]
    assert alice.split()[:6] == [ALICE, "@alice@social.example", INSTANCE, "active", "all", "01ALICECURSOR"]
    assert bob.split()[:6] == [BOB, "@bob@social.example", INSTANCE, "active", "follow,mention", "-"]
    assert alice.endswith(" -")  # no relay worker holds it: a single-process bot
    assert alice.index(INSTANCE) == header.index("INSTANCE")
    for value in SECRETS:
        assert value not in out

    assert await cli(["accounts", "list", "--user", BOB, "--json"], env) == 0
    out = capsys.readouterr().out
    [line] = out.splitlines()
    record = json.loads(line)
    assert record["user"] == BOB
    assert record["acct"] == "bob@social.example"
    assert record["notify_types"] == ["follow", "mention"]
    assert record["cursor"] is None
    assert record["created_at"].endswith("+00:00")
    assert record["worker"] is None
    assert record["lease_expires_at"] is None
    assert "token" not in " ".join(record)
    assert not any(value in out for value in SECRETS)


async def test_accounts_list_of_an_empty_database_creates_no_key_file(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(["accounts", "list"], env) == 0
    assert capsys.readouterr().out == "no connected accounts\n"
    assert await cli(["accounts", "list", "--user", ALICE], env) == 0
    assert capsys.readouterr().out == f"{ALICE} has no connected accounts\n"
    assert not key_file_of(env).exists()


# -- accounts revoke ------------------------------------------------------------------------------------


async def test_accounts_revoke_revokes_on_the_server_and_deletes_here(
    env: dict[str, str], gts: FakeGoToSocial, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = KeyRing.generate_file(key_file_of(env))
    await connect_accounts(db_url_of(env), ring, gts, {ALICE: ["alice"], BOB: ["bob"]})
    [alice_token] = gts.active_tokens("alice")

    assert await cli(["accounts", "revoke", "--user", ALICE], env) == 0
    out = capsys.readouterr().out
    assert f"revoked @alice@{gts.host} of {ALICE} on {gts.host} and deleted it here" in out
    assert "run it while the bot is stopped" in out
    assert alice_token not in out
    assert gts.active_tokens("alice") == []
    assert len(gts.active_tokens("bob")) == 1  # another user's account is untouched

    assert await cli(["accounts", "list", "--json"], env) == 0
    listed = [json.loads(line)["user"] for line in capsys.readouterr().out.splitlines()]
    assert listed == [BOB]


async def test_accounts_revoke_of_a_user_with_several_accounts_needs_a_choice(
    env: dict[str, str], gts: FakeGoToSocial, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = KeyRing.generate_file(key_file_of(env))
    await connect_accounts(db_url_of(env), ring, gts, {BOB: ["bob", "robert", "bobby"]})

    assert await cli(["accounts", "revoke", "--user", BOB], env) == 2
    err = capsys.readouterr().err
    assert f"{BOB} has 3 accounts (@bob@{gts.host}, @robert@{gts.host}, @bobby@{gts.host})" in err
    assert "--account ACCT or --account all" in err
    assert await cli(["accounts", "revoke", "--user", BOB, "--account", "nobody@nowhere"], env) == 2
    assert "has no account 'nobody@nowhere'" in capsys.readouterr().err
    assert all(len(gts.active_tokens(u)) == 1 for u in ("bob", "robert", "bobby"))

    assert await cli(["accounts", "revoke", "--user", BOB, "--account", f"@robert@{gts.host}"], env) == 0
    assert f"revoked @robert@{gts.host}" in capsys.readouterr().out
    assert [len(gts.active_tokens(u)) for u in ("bob", "robert", "bobby")] == [1, 0, 1]

    assert await cli(["accounts", "revoke", "--user", BOB, "--account", "all"], env) == 0
    assert capsys.readouterr().out.count("revoked @") == 2
    assert [len(gts.active_tokens(u)) for u in ("bob", "robert", "bobby")] == [0, 0, 0]
    assert await cli(["accounts", "revoke", "--user", BOB], env) == 2
    assert f"{BOB} has no connected accounts" in capsys.readouterr().err


async def test_accounts_revoke_deletes_here_and_explains_when_the_instance_cannot_revoke(
    env: dict[str, str], gts: FakeGoToSocial, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = KeyRing.generate_file(key_file_of(env))
    await connect_accounts(db_url_of(env), ring, gts, {ALICE: ["alice"]})
    gts.faults.revoke_enabled = False

    assert await cli(["accounts", "revoke", "--user", ALICE, "--account", "all"], env) == 0
    out = capsys.readouterr().out
    assert f"deleted @alice@{gts.host} of {ALICE} here, but {gts.host} did not revoke its token" in out
    assert f"tell the user: Remove the bot's access by hand in {gts.host}'s settings" in out
    assert "keeps relaying that account until it is restarted" in out
    assert len(gts.active_tokens("alice")) == 1  # still valid on the server, as the output says
    assert await cli(["accounts", "list"], env) == 0
    assert capsys.readouterr().out == "no connected accounts\n"


# -- migrate-db -----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/copy/gts-bot.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_migrate_db_copies_every_row_still_encrypted_and_decryptable(
    env: dict[str, str], target_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = db_url_of(env)
    ring = KeyRing.generate_file(key_file_of(env))
    await seed_every_table(source_url, ring)
    source_rows = await table_rows(source_url)
    assert all(source_rows.values()), "the seed must fill every table, or the copy test misses one"

    assert await cli(["migrate-db", "--from", source_url, "--to", target_url], env) == 0
    captured = capsys.readouterr()
    total = sum(len(rows) for rows in source_rows.values())
    assert f"copied {total} rows from sqlite+aiosqlite:///" in captured.out
    for name, rows in source_rows.items():
        assert f"  {name}: {len(rows)}\n" in captured.out
    assert DB_PASSWORD not in captured.out + captured.err

    # Same rows, ids and ciphertexts included; every secret decrypts with the same key ring.
    assert await table_rows(target_url) == source_rows
    assert await read_secrets(target_url, ring) == SECRETS
    async with open_database(target_url) as db, db.sessions() as s:
        assert await all_readable_with(s, ring) == await count_sealed(s) == SEALED_COUNT
    engine = create_engine(target_url)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()

    # New rows continue after the copied ids (PostgreSQL sequences were moved past them).
    async with open_database(target_url) as db, db.sessions() as s, s.begin():
        repos = Repositories(s, ring)
        app = await repos.apps.add(instance=INSTANCE, scopes="write", client_id="cid-2", client_secret="x")
        flow = await repos.flows.add(
            matrix_user_id=BOB, instance=INSTANCE, app_id=app.id, scopes="read", dm_room_id=DM,
            ttl=timedelta(minutes=1),
        )  # fmt: skip
    assert app.id == max(int(str(row[0])) for row in source_rows["fediverse_apps"]) + 1
    assert flow.id == max(int(str(row[0])) for row in source_rows["pending_flows"]) + 1


async def test_migrate_db_refuses_a_target_that_holds_data(
    env: dict[str, str], target_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = db_url_of(env)
    ring = KeyRing.generate_file(key_file_of(env))
    await seed_every_table(source_url, ring)
    async with open_database(target_url) as db, db.sessions() as s, s.begin():
        await Repositories(s, ring).dm_rooms.set("@carol:test.org", "!carol:test.org")
    before = await table_rows(target_url)

    assert await cli(["migrate-db", "--from", source_url, "--to", target_url], env) == 65
    err = capsys.readouterr().err
    assert "gts-bot migrate-db: the target already holds data (in dm_rooms)" in err
    assert DB_PASSWORD not in err
    assert await table_rows(target_url) == before


async def test_migrate_db_refuses_a_missing_or_outdated_source(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target_url = f"sqlite+aiosqlite:///{tmp_path}/copy.sqlite3"
    missing = tmp_path / "nothing-here.sqlite3"
    missing_url = f"sqlite+aiosqlite:///{missing}"
    assert await cli(["migrate-db", "--from", missing_url, "--to", target_url], env) == 65
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()

    scripts = ScriptDirectory.from_config(alembic_config())
    base = scripts.get_base()
    assert base is not None
    if base == head_revision():
        pytest.skip("only one schema revision exists; no outdated source to build")
    old_url = f"sqlite+aiosqlite:///{tmp_path}/old.sqlite3"
    engine = create_engine(old_url)

    def upgrade_to_base(conn: Connection) -> None:
        command.upgrade(alembic_config(conn), base)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to_base)
    finally:
        await engine.dispose()
    assert await cli(["migrate-db", "--from", old_url, "--to", target_url], env) == 65
    assert f"the source is at schema revision {base}, not {head_revision()}" in capsys.readouterr().err
    assert not (tmp_path / "copy.sqlite3").exists()


@pytest.mark.postgres
async def test_the_relay_runs_from_a_postgresql_copy(
    env: dict[str, str], pg_url: str, gts: FakeGoToSocial, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = db_url_of(env)
    ring = KeyRing.generate_file(key_file_of(env))
    gts.add_user("alice")
    old = gts.notify("alice", "follow", "bob")
    async with open_database(source_url) as db, harness(db.sessions, ring) as h:
        account = await h.add_account(gts, "alice", matrix_user=ALICE, cursor=old["id"], dm_room=DM)

    assert await cli(["migrate-db", "--from", source_url, "--to", pg_url], env) == 0
    capsys.readouterr()

    async with open_database(pg_url) as db, harness(db.sessions, ring) as h:
        await h.manager().start()
        await wait_until(lambda: gts.open_streams("alice") == 1, what="stream open from the copy")
        gts.notify("alice", "mention", "carol", status_text="relayed from PostgreSQL")
        await wait_until(lambda: len(h.sender.events) == 1, what="delivery")
        [event] = h.sender.events
        assert "relayed from PostgreSQL" in event.body
        assert event.room_id == DM
        copied = await h.account(account.id)
        assert copied.token == account.token
        assert copied.acct == account.acct


# -- keys retire ----------------------------------------------------------------------------------------


async def test_keys_retire_drops_old_keys_only_when_nothing_needs_them(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, key_file = db_url_of(env), key_file_of(env)
    first = KeyRing.generate_file(key_file)
    await seed_every_table(url, first)
    assert await cli(["keys", "retire"], env) == 0
    assert capsys.readouterr().out == f"nothing to retire: {key_file} holds only its current key\n"

    assert await cli(["keys", "rotate"], env) == 0
    rotated = KeyRing.load(key_file)
    assert len(rotated.key_ids) == 2
    # A secret still sealed under the old key (as if written by a bot that ran through the rotation):
    async with open_database(url) as db, db.sessions() as s, s.begin():
        await Repositories(s, first).apps.add(
            instance=INSTANCE, scopes="write", client_id="cid-old", client_secret="old-key-secret"
        )
    before = key_file.read_bytes()
    capsys.readouterr()
    assert await cli(["keys", "retire"], env) == 77
    assert "still need an old key" in capsys.readouterr().err
    assert key_file.read_bytes() == before

    assert await cli(["keys", "rotate"], env) == 0  # re-encrypts that one too, under a third key
    capsys.readouterr()
    assert await cli(["keys", "retire"], env) == 0
    out = capsys.readouterr().out
    assert f"removed 2 old keys from {key_file}" in out
    assert "need the previous key file" in out
    slim = KeyRing.load(key_file)
    assert slim.key_ids == {slim.current_key_id}
    assert await read_secrets(url, slim) == SECRETS
    async with open_database(url) as db, db.sessions() as s:
        assert await all_readable_with(s, slim) == SEALED_COUNT + 1


async def test_copy_database_moves_big_tables_in_batches(tmp_path: Path) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path}/source.sqlite3"
    target_url = f"sqlite+aiosqlite:///{tmp_path}/target.sqlite3"
    async with open_database(source_url) as db, db.sessions() as s, s.begin():
        for n in range(10):
            await Repositories(s, KeyRing.generate()).handled_events.mark_handled(f"$event-{n}", DM)
    report = await copy_database(source_url, target_url, batch_rows=3)
    assert report.rows["handled_events"] == report.total == 10
    assert await table_rows(target_url) == await table_rows(source_url)
