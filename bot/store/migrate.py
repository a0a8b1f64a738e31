"""Schema migrations: upgrade to head at start, refuse a database written by a newer gts-bot.

The alembic scripts ship as the package ``gts_bot_migrations`` (the top-level ``migrations/`` directory),
configured here in code; there is no alembic.ini. To write a new revision after changing the models::

    python -m bot.store.migrate revision "add the frobnicator column"

which autogenerates a date-slug named file in ``migrations/versions`` against a scratch SQLite database
upgraded to the current head. Review it before committing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.errors import DatabaseVersionError
from bot.store.db import create_engine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade", "upgrade_url"]

MIGRATIONS_PACKAGE = "gts_bot_migrations"


def script_location() -> Path:
    location = importlib.resources.files(MIGRATIONS_PACKAGE)
    if not isinstance(location, Path):  # e.g. a zipped install: alembic needs real files
        raise RuntimeError(f"the {MIGRATIONS_PACKAGE} package is not installed as plain files")
    return location


def alembic_config(connection: Connection | None = None) -> Config:
    """An in-memory alembic Config; with `connection`, env.py runs on it instead of opening its own."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    # Date-slug file names, e.g. 2026_11_28_0528-initial_schema.py ("%%" escapes configparser's "%").
    cfg.set_main_option(
        "file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(slug)s"
    )
    cfg.set_main_option("truncate_slug_length", "40")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migration scripts have no head revision")
    return head


def _known_revisions(cfg: Config) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}


def _refuse_unknown(connection: Connection, cfg: Config) -> None:
    known = _known_revisions(cfg)
    for revision in MigrationContext.configure(connection).get_current_heads():
        if revision not in known:
            raise DatabaseVersionError(
                f"the database is at revision {revision} which this version of gts-bot does not know; "
                "it was probably written by a newer gts-bot — upgrade gts-bot or restore a backup"
            )


def _upgrade_sync(connection: Connection) -> str:
    cfg = alembic_config(connection)
    _refuse_unknown(connection, cfg)
    command.upgrade(cfg, "head")
    if connection.dialect.name == "sqlite":
        problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise RuntimeError(f"the migration left {len(problems)} broken foreign key references")
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None:
        raise RuntimeError("the database has no revision after upgrading")
    return revision


async def upgrade(engine: AsyncEngine) -> str:
    """Upgrade the database to the newest revision and return it.

    Raises DatabaseVersionError, changing nothing, if the database is at a revision these scripts
    do not know.
    """
    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy and drop tables; with foreign keys enforced, dropping a referenced
            # table would cascade-delete or fail. The pragma is a no-op inside a transaction, so it is
            # set before one starts and restored after it ends; foreign_key_check runs before commit.
            await _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            revision = await conn.run_sync(_upgrade_sync)
            await conn.commit()
        finally:
            if sqlite:
                await conn.rollback()
                await _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")
    return revision


async def _sqlite_pragma(conn: AsyncConnection, pragma: str) -> None:
    await conn.exec_driver_sql(pragma)
    await conn.commit()


async def upgrade_url(url: str) -> str:
    engine = create_engine(url)
    try:
        return await upgrade(engine)
    finally:
        await engine.dispose()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def _revision_sync(connection: Connection, message: str) -> None:
    command.revision(alembic_config(connection), message=message, autogenerate=True)


async def _make_revision(message: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite+aiosqlite:///{scratch}/scratch.sqlite3")
        try:
            if ScriptDirectory.from_config(alembic_config()).get_current_head() is not None:
                await upgrade(engine)
            async with engine.connect() as conn:
                await conn.run_sync(_revision_sync, message)
        finally:
            await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.store.migrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="autogenerate a revision from the model changes")
    revision.add_argument("message")
    args = parser.parse_args(argv)
    if args.command == "revision":
        asyncio.run(_make_revision(args.message))


if __name__ == "__main__":
    main()
