"""The async engine and session factory.

SQLite gets, on every new connection: WAL journal (readers do not block the writer), a busy timeout (a
second writer waits instead of failing with "database is locked"), and foreign keys switched on (SQLite
leaves them off by default). PostgreSQL (``postgresql+asyncpg://``) needs nothing special.

Statement parameters are never put into error messages (`hide_parameters`): they are users' texts
(notification bodies, replies) that a logged database error would otherwise carry into the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.store.private_files import ensure_private_dir, ensure_private_sqlite_file

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_engine", "session_factory", "take_write_lock"]

SQLITE_BUSY_TIMEOUT_MS = 5000


def create_engine(url: str) -> AsyncEngine:
    """An AsyncEngine for `url`; a SQLite file's directory is made now, the file itself private (see
    `private_files`) when the first connection opens it."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True, hide_parameters=True)

    database = parsed.database
    engine = create_async_engine(parsed, hide_parameters=True)
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        ensure_private_dir(path.parent)

        def private_file(*args: Any) -> None:
            # Just before SQLite opens (and maybe creates) the file: nothing is created by a mere engine.
            ensure_private_sqlite_file(path)

        event.listen(engine.sync_engine, "do_connect", private_file)
    event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def take_write_lock(session: AsyncSession) -> None:
    """On SQLite, take the database's write lock now, at the start of the session's transaction (call it
    first). A transaction that reads and then writes would otherwise take it at its first write, and when
    another connection wrote in between, SQLite refuses that at once with "database is locked" (the read
    snapshot is stale; the busy timeout does not apply). Taken first, the lock is waited for within the
    busy timeout instead. PostgreSQL needs nothing: this does nothing there."""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))
