"""Secrets at rest: never in plaintext on disk, bound to their row, unreadable without the right key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import DecryptionError
from bot.store.db import create_engine, session_factory
from bot.store.encrypted_columns import SEALED_COLUMNS
from bot.store.keyring import KeyRing
from bot.store.migrate import upgrade
from bot.store.models import Base
from bot.store.outbox import OutboxRepository
from bot.store.repositories import AccountId, Repositories

INSTANCE = "https://example.org"
APP_SECRET = "client-secret-QWERTY-0123456789"
TOKEN_A = "access-token-AAAA-0123456789abcdef"
TOKEN_B = "access-token-BBBB-0123456789abcdef"
MATRIX_TOKEN = "syt_matrix_token_ZZZZ_0123456789"
DIRECT_MESSAGE = "a direct message for alice only 0123456789"  # a notification waiting in the outbox


async def _store_secrets(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, verifiers: list[str] | None = None
) -> tuple[int, int]:
    """`verifiers` receives the pending flow's PKCE verifier (made by the repository, so not a constant)."""
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.add(
            instance=INSTANCE, scopes="read", client_id="cid", client_secret=APP_SECRET
        )
        a = await repos.accounts.upsert(
            matrix_user_id="@alice:example.org",
            instance=INSTANCE,
            app_id=app.id,
            fediverse_account_id="01A",
            acct="alice@example.org",
            token=TOKEN_A,
            scopes="read",
        )
        b = await repos.accounts.upsert(
            matrix_user_id="@bob:example.org",
            instance=INSTANCE,
            app_id=app.id,
            fediverse_account_id="01B",
            acct="bob@example.org",
            token=TOKEN_B,
            scopes="read",
        )
        await repos.matrix_session.save(
            user_id="@bot:example.org", device_id="DEV", access_token=MATRIX_TOKEN
        )
        flow = await repos.flows.add(
            matrix_user_id="@carol:example.org",
            instance=INSTANCE,
            app_id=app.id,
            scopes="read",
            dm_room_id="!dm:example.org",
            ttl=timedelta(minutes=5),
        )
        await OutboxRepository(s, keyring).add(
            matrix_user_id="@alice:example.org",
            room_id="!dm:example.org",
            txn_id="gts.1.01N",
            body=DIRECT_MESSAGE,
            html=f"<p>{DIRECT_MESSAGE}</p>",
            cursors={a.id: "01N"},
        )
        if verifiers is not None:
            verifiers.append(flow.pkce_verifier)
        return a.id, b.id


def _disk_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


async def test_no_plaintext_secret_in_the_sqlite_files(tmp_path: Path, keyring: KeyRing) -> None:
    db = tmp_path / "gts-bot.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    await upgrade(engine)
    verifiers: list[str] = []
    await _store_secrets(session_factory(engine), keyring, verifiers)
    async with engine.connect() as conn:
        stored = (
            (await conn.execute(text("SELECT token_encrypted FROM accounts ORDER BY id"))).scalars().all()
        )

    secrets = [APP_SECRET, TOKEN_A, TOKEN_B, MATRIX_TOKEN, DIRECT_MESSAGE, *verifiers]
    assert len(verifiers) == 1
    # While connections are open the new pages sit in the WAL; after closing they are checkpointed.
    wal = db.with_name(db.name + "-wal")
    assert wal.exists()
    assert wal.stat().st_size > 0
    on_disk = _disk_bytes(db)
    for secret in secrets:
        assert secret.encode() not in on_disk
    assert all(ct.encode() in on_disk for ct in stored)

    await engine.dispose()
    on_disk = _disk_bytes(db)
    for secret in secrets:
        assert secret.encode() not in on_disk
    assert all(ct.encode() in on_disk for ct in stored)
    assert b"alice@example.org" in on_disk  # the check reads the right file: non-secret data is there


async def test_tampered_ciphertext_fails(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    a_id, _ = await _store_secrets(sessions, keyring)
    async with sessions() as s, s.begin():
        ct = (
            await s.execute(text("SELECT token_encrypted FROM accounts WHERE id = :id"), {"id": a_id})
        ).scalar_one()
        flipped = ct[:-3] + ("A" if ct[-3] != "A" else "B") + ct[-2:]
        await s.execute(
            text("UPDATE accounts SET token_encrypted = :ct WHERE id = :id"), {"ct": flipped, "id": a_id}
        )
    async with sessions() as s:
        with pytest.raises(DecryptionError) as info:
            await Repositories(s, keyring).accounts.get(AccountId(a_id))
        assert TOKEN_A not in str(info.value)


async def test_ciphertext_copied_to_another_row_fails(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    a_id, b_id = await _store_secrets(sessions, keyring)
    async with sessions() as s, s.begin():
        await s.execute(
            text(
                "UPDATE accounts SET token_encrypted = "
                "(SELECT token_encrypted FROM accounts WHERE id = :a) WHERE id = :b"
            ),
            {"a": a_id, "b": b_id},
        )
    async with sessions() as s:
        repos = Repositories(s, keyring)
        assert (await repos.accounts.get(AccountId(a_id))).token == TOKEN_A  # type: ignore[union-attr]
        with pytest.raises(DecryptionError):
            await repos.accounts.get(AccountId(b_id))


async def test_ciphertext_moved_to_another_purpose_fails(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    await _store_secrets(sessions, keyring)
    async with sessions() as s, s.begin():
        await s.execute(
            text(
                "UPDATE matrix_session SET access_token_encrypted = "
                "(SELECT client_secret_encrypted FROM fediverse_apps)"
            )
        )
    async with sessions() as s:
        with pytest.raises(DecryptionError):
            await Repositories(s, keyring).matrix_session.get()


async def test_secrets_from_another_key_ring_fail(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    a_id, _ = await _store_secrets(sessions, keyring)
    async with sessions() as s:
        stranger = Repositories(s, KeyRing.generate())
        with pytest.raises(DecryptionError, match="not in the key ring"):
            await stranger.accounts.get(AccountId(a_id))
        with pytest.raises(DecryptionError):
            await stranger.apps.get(INSTANCE, "read")
        with pytest.raises(DecryptionError):
            await stranger.matrix_session.get()
        with pytest.raises(DecryptionError):
            await stranger.flows.get_for_user("@carol:example.org")


async def test_a_pkce_verifier_copied_to_another_flow_fails(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    await _store_secrets(sessions, keyring)
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.get(INSTANCE, "read")
        assert app is not None
        await repos.flows.add(
            matrix_user_id="@dave:example.org",
            instance=INSTANCE,
            app_id=app.id,
            scopes="read",
            dm_room_id="!dave:example.org",
            ttl=timedelta(minutes=5),
        )
        await s.execute(
            text(
                "UPDATE pending_flows SET pkce_verifier_encrypted = (SELECT pkce_verifier_encrypted "
                "FROM pending_flows WHERE matrix_user_id = '@carol:example.org') "
                "WHERE matrix_user_id = '@dave:example.org'"
            )
        )
    async with sessions() as s:
        repos = Repositories(s, keyring)
        assert len(await repos.flows.get_for_user("@carol:example.org")) == 1
        with pytest.raises(DecryptionError):
            await repos.flows.get_for_user("@dave:example.org")


def test_every_encrypted_column_is_sealed() -> None:
    """Rotation walks SEALED_COLUMNS; a new *_encrypted column missing there would be left behind."""
    encrypted = {
        (table.name, column.name)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_encrypted")
    }
    sealed = {(c.model.__tablename__, c.attribute) for c in SEALED_COLUMNS}
    assert encrypted == sealed
    assert len(sealed) == 6
