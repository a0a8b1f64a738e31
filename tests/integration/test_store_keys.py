"""Opening the key ring at start-up and rotating keys, on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import KeyRingError
from bot.store import key_rotation
from bot.store.action_journal import ActionKind, Intent
from bot.store.encrypted_columns import all_readable_with
from bot.store.key_rotation import open_keyring, retire_old_keys, rotate_keys
from bot.store.keyring import KeyRing
from bot.store.records import AccountId
from bot.store.repositories import Repositories

if TYPE_CHECKING:
    from bot.config import Config

INSTANCE = "https://example.org"


def _config(tmp_path: Path, db_url: str, key_file: Path) -> Config:
    # Only the fields the store reads; the full Config is another module's business.
    return cast(
        "Config",
        SimpleNamespace(
            data_dir=tmp_path,
            database=SimpleNamespace(url=db_url),
            encryption=SimpleNamespace(key_file=key_file),
        ),
    )


async def _store(sessions: async_sessionmaker[AsyncSession], ring: KeyRing) -> None:
    async with sessions() as s, s.begin():
        repos = Repositories(s, ring)
        app = await repos.apps.add(
            instance=INSTANCE, scopes="read", client_id="cid", client_secret="app-secret"
        )
        for n in range(3):
            await repos.accounts.upsert(
                matrix_user_id=f"@u{n}:example.org",
                instance=INSTANCE,
                app_id=app.id,
                fediverse_account_id=str(n),
                acct=f"u{n}@example.org",
                token=f"token-{n}",
                scopes="read",
            )
        await repos.matrix_session.save(user_id="@bot:example.org", device_id="DEV", access_token="syt-bot")
        # A reply waiting to be posted keeps its text sealed; a done one (no text) has nothing to rotate.
        for event_id in ("$waiting", "$done"):
            await repos.action_journal.receive(
                Intent(event_id, "@u0:example.org", AccountId(1), ActionKind.REPLY, "s1", "k", text="a reply")
            )
        await repos.action_journal.finish("$done")


async def _read_all(sessions: async_sessionmaker[AsyncSession], ring: KeyRing) -> list[str]:
    async with sessions() as s:
        repos = Repositories(s, ring)
        app = await repos.apps.get(INSTANCE, "read")
        session = await repos.matrix_session.get()
        assert app is not None
        assert session is not None
        tokens = [a.token for n in range(3) for a in await repos.accounts.list_for_user(f"@u{n}:example.org")]
        waiting = await repos.action_journal.get("$waiting")
        assert waiting is not None
        assert waiting.text is not None
        return [app.client_secret, *tokens, session.access_token, waiting.text]


EXPECTED = ["app-secret", "token-0", "token-1", "token-2", "syt-bot", "a reply"]


async def _key_ids_in_db(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessions() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT client_secret_encrypted FROM fediverse_apps UNION ALL "
                    "SELECT token_encrypted FROM accounts UNION ALL "
                    "SELECT access_token_encrypted FROM matrix_session UNION ALL "
                    "SELECT text_encrypted FROM action_journal WHERE text_encrypted IS NOT NULL"
                )
            )
        ).scalars()
        return {ct.split(".")[1] for ct in rows}


async def test_open_keyring_creates_a_key_for_an_empty_database(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "secret" / "keyring.json"
    with caplog.at_level(logging.WARNING, logger="bot.store.key_rotation"):
        ring = await open_keyring(key_file, sessions)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert KeyRing.load(key_file).current_key_id == ring.current_key_id
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("back it up" in m and str(key_file) in m for m in warnings)
    key_text = json.loads(key_file.read_text())["keys"][ring.current_key_id]
    assert all(key_text not in m for m in warnings)
    # Next start: the file is there and is simply loaded.
    caplog.clear()
    again = await open_keyring(key_file, sessions)
    assert again.current_key_id == ring.current_key_id
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_open_keyring_refuses_a_new_key_when_secrets_exist(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    await _store(sessions, keyring)
    key_file = tmp_path / "keyring.json"
    with pytest.raises(KeyRingError, match="missing but the database holds encrypted secrets") as info:
        await open_keyring(key_file, sessions)
    assert "backup" in str(info.value)
    assert not key_file.exists()


async def test_open_keyring_checks_the_key_fits_the_database(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    right, wrong = tmp_path / "right.json", tmp_path / "wrong.json"
    ring = KeyRing.generate_file(right)
    KeyRing.generate_file(wrong)
    await _store(sessions, ring)
    loaded = await open_keyring(right, sessions)
    assert await _read_all(sessions, loaded) == EXPECTED
    with pytest.raises(KeyRingError, match="cannot decrypt"):
        await open_keyring(wrong, sessions)


async def test_open_keyring_reports_a_broken_key_file(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key_file = tmp_path / "keyring.json"
    key_file.write_text("{not json")
    key_file.chmod(0o600)
    with pytest.raises(KeyRingError, match="not valid JSON"):
        await open_keyring(key_file, sessions)
    assert key_file.read_text() == "{not json"


async def test_rotation_reencrypts_everything_and_old_key_can_go(
    tmp_path: Path, db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key_file = tmp_path / "keyring.json"
    original = KeyRing.generate_file(key_file)
    await _store(sessions, original)
    config = _config(tmp_path, db_url, key_file)

    assert await rotate_keys(config) == 6

    rotated = KeyRing.load(key_file)
    assert rotated.current_key_id != original.current_key_id
    assert rotated.key_ids == {original.current_key_id, rotated.current_key_id}
    assert rotated.e2ee_store_key() == original.e2ee_store_key()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert await _key_ids_in_db(sessions) == {rotated.current_key_id}
    assert await _read_all(sessions, rotated) == EXPECTED
    # The old key is no longer needed: a ring holding only the new key reads everything.
    assert await _read_all(sessions, rotated.only_current()) == EXPECTED

    assert await retire_old_keys(config) == 1
    slim = KeyRing.load(key_file)
    assert slim.key_ids == {rotated.current_key_id}
    assert await _read_all(sessions, slim) == EXPECTED
    assert await retire_old_keys(config) == 0


async def test_rotation_with_the_wrong_key_file_changes_nothing(
    tmp_path: Path, db_url: str, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    await _store(sessions, keyring)
    key_file = tmp_path / "other.json"
    KeyRing.generate_file(key_file)
    before = key_file.read_bytes()
    with pytest.raises(KeyRingError, match="cannot decrypt"):
        await rotate_keys(_config(tmp_path, db_url, key_file))
    assert key_file.read_bytes() == before
    assert await _read_all(sessions, keyring) == EXPECTED


async def test_rotation_interrupted_before_commit_leaves_a_readable_database(
    tmp_path: Path, db_url: str, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "keyring.json"
    original = KeyRing.generate_file(key_file)
    await _store(sessions, original)

    async def crash(session: AsyncSession, ring: KeyRing) -> int:
        raise RuntimeError("power cut")

    monkeypatch.setattr(key_rotation, "reencrypt_all", crash)  # a crash cannot be made for real in-process
    with pytest.raises(RuntimeError, match="power cut"):
        await rotate_keys(_config(tmp_path, db_url, key_file))

    on_disk = KeyRing.load(key_file)  # already the new ring, holding the old key too
    assert on_disk.current_key_id != original.current_key_id
    assert await _key_ids_in_db(sessions) == {original.current_key_id}
    assert await _read_all(sessions, on_disk) == EXPECTED
    async with sessions() as s:
        assert await all_readable_with(s, on_disk) == 6


async def test_retire_refuses_while_secrets_need_an_old_key(
    tmp_path: Path, db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key_file = tmp_path / "keyring.json"
    original = KeyRing.generate_file(key_file)
    await _store(sessions, original)
    original.with_new_current_key().save(key_file)  # a new key, but nothing re-encrypted yet
    before = key_file.read_bytes()
    with pytest.raises(KeyRingError, match="still need an old key"):
        await retire_old_keys(_config(tmp_path, db_url, key_file))
    assert key_file.read_bytes() == before


async def test_rotate_without_a_key_file_fails_clearly(tmp_path: Path, db_url: str) -> None:
    with pytest.raises(KeyRingError, match="does not exist"):
        await rotate_keys(_config(tmp_path, db_url, tmp_path / "absent.json"))
