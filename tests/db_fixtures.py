"""Database fixtures: a fresh, migrated database per test, on SQLite and on PostgreSQL.

`db_url` is parametrized over both backends; each test gets its own SQLite file or its own PostgreSQL
database (created on the session's throwaway server from tests/pg.py, dropped afterwards).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.store.db import create_engine, session_factory
from bot.store.keyring import KeyRing
from bot.store.migrate import upgrade
from tests.pg import PostgresServer

__all__ = ["db_url", "engine", "keyring", "sessions", "sqlite_url"]


def sqlite_url_for(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return sqlite_url_for(tmp_path / "data" / "gts-bot.sqlite3")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url_for(tmp_path / "data" / "gts-bot.sqlite3")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"gts_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield server.url(name)
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database migrated to head (by the migrations, not create_all)."""
    eng = create_engine(db_url)
    try:
        await upgrade(eng)
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()
