"""Copy every row of one gts-bot database into another, e.g. from SQLite to PostgreSQL.

Nothing is decrypted: the `*_encrypted` columns are copied as they are, and the key file stays valid,
because the associated data of each ciphertext binds it to values of its row, which are copied unchanged
(ids included, so foreign keys and the relay outbox's cursor references keep pointing at the same rows).

Steps: the source must be at this gts-bot's newest schema revision (it is read, never changed); the
target is upgraded to it; then, in one transaction on the target: refuse if any table holds a row, copy
the tables in foreign-key order (`Base.metadata.sorted_tables`; alembic's own table is written by the
upgrade), move PostgreSQL id sequences past the copied ids, and compare every table's row count with the
source's. Any failure rolls the target back to empty. The source is read inside one transaction
(a snapshot on PostgreSQL and on SQLite), but the bot should be stopped anyway: what it writes after the
copy began would be lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Integer, Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.admin import EXIT_REFUSED, OperatorError
from bot.store.db import create_engine
from bot.store.migrate import current_revision, head_revision, upgrade
from bot.store.models import Base

__all__ = ["CopyReport", "copied_tables", "copy_database", "describe_url"]

BATCH_ROWS = 500


@dataclass(frozen=True)
class CopyReport:
    revision: str
    rows: Mapping[str, int]
    """Rows copied per table, in copy order."""

    @property
    def total(self) -> int:
        return sum(self.rows.values())


# Which relay worker holds which account is the running processes' state, not data: a copy starts with
# no lease held and no worker alive.
RUNTIME_TABLES = frozenset({"alembic_version", "relay_leases", "relay_workers"})


def copied_tables() -> list[Table]:
    """Every table of the models but the runtime ones, parents before children."""
    return [t for t in Base.metadata.sorted_tables if t.name not in RUNTIME_TABLES]


def describe_url(url: str) -> str:
    """The URL for people: the password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def _refuse(message: str) -> OperatorError:
    return OperatorError(message, exit_code=EXIT_REFUSED)


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser()


async def copy_database(source_url: str, target_url: str, *, batch_rows: int = BATCH_ROWS) -> CopyReport:
    """Copy all rows from `source_url` into the empty (or new) database at `target_url`.

    Raises OperatorError (changing nothing) when the source is not a gts-bot database at the newest
    revision or the target already holds data; DatabaseVersionError when the target is newer than this
    code.
    """
    source_file = _sqlite_file(source_url)
    if source_file is not None and not source_file.is_file():
        raise _refuse(f"the source {describe_url(source_url)} does not exist")
    source = create_engine(source_url)
    target = create_engine(target_url)
    try:
        head = head_revision()
        revision = await current_revision(source)
        if revision is None:
            raise _refuse(f"the source {describe_url(source_url)} holds no gts-bot schema")
        if revision != head:
            raise _refuse(
                f"the source is at schema revision {revision}, not {head}, the newest this gts-bot knows; "
                "upgrade it first (GTS_BOT_DATABASE__URL=<source url> gts-bot migrate) or use the gts-bot "
                "that wrote it"
            )
        await upgrade(target)
        rows = await _copy(source, target, batch_rows)
    finally:
        await source.dispose()
        await target.dispose()
    return CopyReport(head, rows)


async def _copy(source: AsyncEngine, target: AsyncEngine, batch_rows: int) -> dict[str, int]:
    tables = copied_tables()
    async with target.begin() as dst:
        filled = [t.name for t in tables if await _count(dst, t)]
        if filled:
            raise _refuse(
                "the target already holds data (in " + ", ".join(filled) + "); migrate-db only copies into "
                "an empty database"
            )
        async with source.connect() as src:
            await _begin_snapshot(src)
            copied = {t.name: await _copy_table(src, dst, t, batch_rows) for t in tables}
            expected = {t.name: await _count(src, t) for t in tables}
            await src.rollback()
        if dst.dialect.name == "postgresql":
            for table in tables:
                await _move_sequence(dst, table)
        found = {t.name: await _count(dst, t) for t in tables}
        if not expected == copied == found:
            mismatched = [n for n in expected if not expected[n] == copied[n] == found[n]]
            raise RuntimeError(
                "row counts differ after copying (" + ", ".join(mismatched) + "); the target was left empty"
            )
    return copied


async def _begin_snapshot(conn: AsyncConnection) -> None:
    """Make every read on `conn` see one consistent state of the database."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
    elif conn.dialect.name == "sqlite":
        # The sqlite3 driver only opens a transaction before writes; a deferred BEGIN makes the reads
        # below share one snapshot (WAL mode lets the bot keep writing meanwhile).
        await conn.exec_driver_sql("BEGIN")


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _copy_table(src: AsyncConnection, dst: AsyncConnection, table: Table, batch_rows: int) -> int:
    copied = 0
    result = await src.stream(select(table).order_by(*table.primary_key.columns))
    async for batch in result.partitions(batch_rows):
        await dst.execute(table.insert(), [dict(row._mapping) for row in batch])
        copied += len(batch)
    return copied


async def _move_sequence(conn: AsyncConnection, table: Table) -> None:
    """Set the id sequence of `table` (if it has one) so the next id follows the copied ones."""
    (column, *others) = table.primary_key.columns
    if others or not isinstance(column.type, Integer):
        return
    sequence = (
        await conn.execute(select(func.pg_get_serial_sequence(table.name, column.name)))
    ).scalar_one_or_none()
    if sequence is None:
        return
    highest = func.max(column)
    await conn.execute(
        select(func.setval(sequence, func.coalesce(highest, 1), highest.is_not(None))).select_from(table)
    )
