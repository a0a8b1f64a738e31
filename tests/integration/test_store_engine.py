"""The engine: SQLite connections get WAL, a busy timeout and foreign keys; the file's directory is made."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.db import SQLITE_BUSY_TIMEOUT_MS, create_engine, session_factory
from bot.store.migrate import upgrade
from bot.store.models import DmRoom


async def _pragmas(engine: AsyncEngine) -> tuple[str, int, int]:
    async with engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
        fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    return mode, timeout, fks


async def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "gts-bot.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        assert db.parent.is_dir()
        assert await _pragmas(engine) == ("wal", SQLITE_BUSY_TIMEOUT_MS, 1)
        assert SQLITE_BUSY_TIMEOUT_MS >= 1000
        # Every pooled connection, not just the first: hold one open and check a second.
        async with engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            assert await _pragmas(engine) == ("wal", SQLITE_BUSY_TIMEOUT_MS, 1)
    finally:
        await engine.dispose()
    assert db.exists()


async def test_session_factory_does_not_expire_on_commit(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        await upgrade(engine)
        async with session_factory(engine)() as session:
            room = DmRoom(
                matrix_user_id="@a:example.org", room_id="!r:example.org", created_at=datetime.now(UTC)
            )
            session.add(room)
            await session.commit()
            # An expired attribute would need a lazy load, which fails outside a greenlet in async code.
            assert room.room_id == "!r:example.org"
    finally:
        await engine.dispose()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_sqlite_database_and_its_wal_files_are_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    db = tmp_path / "data" / "gts-bot.sqlite3"
    old_umask = os.umask(0o022)
    try:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            await upgrade(engine)
            async with engine.connect() as held:  # WAL mode: -wal and -shm exist while a connection does
                await held.exec_driver_sql("SELECT 1")
                companions = [db.with_name(db.name + s) for s in ("-wal", "-shm")]
                assert all(p.exists() for p in companions)
                assert [_mode(p) for p in companions] == [0o600, 0o600]
        finally:
            await engine.dispose()
    finally:
        os.umask(old_umask)
    assert _mode(db.parent) == 0o700
    assert _mode(db) == 0o600


async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    db.touch(mode=0o644)
    db.chmod(0o644)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        assert _mode(db) == 0o644  # an engine alone touches nothing
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()
    assert _mode(db) == 0o600


async def test_database_errors_do_not_carry_the_values_written(tmp_path: Path) -> None:
    """A logged database error must not put users' texts (notification bodies, replies) into the log."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        await upgrade(engine)
        secret_text = "a direct message nobody else may read"
        row = {"matrix_user_id": secret_text, "room_id": "!r:example.org", "created_at": datetime.now(UTC)}
        async with session_factory(engine)() as session, session.begin():
            await session.execute(insert(DmRoom).values(**row))
            with pytest.raises(IntegrityError) as raised:
                await session.execute(insert(DmRoom).values(**row))  # the same primary key again
        assert "UNIQUE" in str(raised.value)
        assert secret_text not in str(raised.value)
    finally:
        await engine.dispose()
