"""`gts-bot migrate` (upgrade the schema in place) and `gts-bot migrate-db` (copy into another database)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.admin import OperatorError
from bot.cli.common import EXIT_OK, describe_database, refused, start_logging

if TYPE_CHECKING:
    from bot.cli import Invocation

__all__ = ["migrate", "migrate_db"]


def migrate(invocation: Invocation) -> int:
    from bot.store.migrate import upgrade_url

    config = invocation.load_config()
    start_logging(config)
    head = asyncio.run(upgrade_url(config.database.url))
    print(f"database {describe_database(config.database.url)} is at revision {head}")
    return EXIT_OK


def migrate_db(invocation: Invocation) -> int:
    from bot.admin.dbcopy import copy_database, describe_url

    source: str = invocation.args.source
    target: str = invocation.args.target
    start_logging(None, source, target)
    try:
        report = asyncio.run(copy_database(source, target))
    except OperatorError as error:
        return refused(invocation, error)
    print(f"copied {report.total} rows from {describe_url(source)} to {describe_url(target)}:")
    for table, rows in report.rows.items():
        print(f"  {table}: {rows}")
    print(
        f"Both databases are at schema revision {report.revision} and the row counts match. The secrets "
        "were copied still encrypted: keep using the same key file. Point database.url at the new "
        "database before starting gts-bot again."
    )
    return EXIT_OK
