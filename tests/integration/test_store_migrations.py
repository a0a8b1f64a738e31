"""Migrations: upgrade on start, the models match the migrations, unknown revisions are refused."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import DatabaseVersionError
from bot.store.db import create_engine
from bot.store.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    script_location,
    upgrade,
    upgrade_url,
)
from bot.store.models import Base

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "accounts",
    "action_journal",
    "dm_rooms",
    "fediverse_apps",
    "handled_events",
    "matrix_session",
    "pending_flows",
    "relay_leases",
    "relayed_events",
    "relay_outbox",
    "relay_workers",
}


def _diffs(connection: Connection, metadata: MetaData) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await current_revision(engine) is None
        head = await upgrade(engine)
        assert head == head_revision()
        assert await upgrade(engine) == head
        assert await current_revision(engine) == head
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables == TABLES | {"alembic_version"}
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diffs, Base.metadata) == []
        # alembic's own drift check, through the same env.py the upgrade uses
        await conn.run_sync(lambda c: command.check(alembic_config(c)))


async def test_the_drift_check_notices_a_difference(engine: AsyncEngine) -> None:
    """Guards the test above against comparing nothing: an unmigrated model change is reported."""
    drifted = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    Table("unmigrated", drifted, Column("id", Integer, primary_key=True))
    drifted.tables["accounts"].append_column(Column("extra", Integer))
    async with engine.connect() as conn:
        diffs = await conn.run_sync(_diffs, drifted)
    kinds = {(d[0], getattr(d[-1], "name", None)) for d in diffs if isinstance(d, tuple)}
    assert ("add_table", "unmigrated") in kinds
    assert ("add_column", "extra") in kinds


async def test_unknown_revision_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'ffffdeadbeef'"))
    with pytest.raises(DatabaseVersionError) as info:
        await upgrade(engine)
    message = str(info.value)
    assert "ffffdeadbeef" in message
    assert "newer gts-bot" in message
    assert "upgrade gts-bot or restore a backup" in message
    assert info.value.exit_code == DatabaseVersionError.exit_code
    assert await current_revision(engine) == "ffffdeadbeef"  # left as it was


async def test_unknown_revision_is_refused_by_upgrade_url(db_url: str) -> None:
    await upgrade_url(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0123456789ab'"))
    finally:
        await engine.dispose()
    with pytest.raises(DatabaseVersionError, match="0123456789ab"):
        await upgrade_url(db_url)


async def test_downgrade_to_base_and_up_again(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        await conn.commit()
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables & TABLES == set()
    assert await upgrade(engine) == head_revision()


async def test_sqlite_foreign_keys_are_back_on_after_upgrade(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        await engine.dispose()


def test_history_is_linear_with_date_slug_file_names() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    revisions = list(scripts.walk_revisions())
    assert revisions
    for rev in revisions:
        assert not isinstance(rev.down_revision, tuple | list), "merge revisions are not allowed"
        assert rev.path is not None
        assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}-[a-z0-9_]+\.py", Path(rev.path).name), rev.path
        source = Path(rev.path).read_text()
        assert "bot.store" not in source, "migrations must not import the models (they change later)"


def test_migrations_ship_as_a_package() -> None:
    location = script_location()
    assert (location / "env.py").is_file()
    assert (location / "script.py.mako").is_file()
    assert list((location / "versions").glob("2*.py"))


def test_pyproject_lists_every_package() -> None:
    """`packages` is a hand-written list (find cannot rename migrations/); a new package must be added."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "bot").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    on_disk |= {"gts_bot_migrations", "gts_bot_migrations.versions"}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["gts_bot_migrations"] == "migrations"
    assert "script.py.mako" in config["package-data"]["gts_bot_migrations"]
