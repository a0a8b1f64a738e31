"""The operator subcommands' handlers and arguments; their rows are in `bot.cli.SUBCOMMANDS`.

Kept light to import (the CLI's --help loads this module): the store and the HTTP stack are imported
inside the handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING

from bot.admin import OperatorError

if TYPE_CHECKING:
    from bot.cli import Invocation
    from bot.config import Config

__all__ = [
    "accounts_list",
    "accounts_list_arguments",
    "accounts_revoke",
    "accounts_revoke_arguments",
    "keys_retire",
    "migrate_db",
    "migrate_db_arguments",
]

EXIT_OK = 0


def _start_logging(config: Config | None, *database_urls: str) -> None:
    from sqlalchemy.engine import make_url

    from bot.config import LoggingConfig
    from bot.log import setup_logging

    settings = config.logging if config is not None else LoggingConfig()
    redactor = setup_logging(settings)
    if settings.level != "DEBUG":
        # alembic narrates every connection at INFO; these commands print their own summary.
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    if config is not None:
        for secret in (config.matrix.password, config.matrix.access_token, config.database.url):
            redactor.add_secret(secret)
        database_urls = (*database_urls, config.database.url)
    for url in database_urls:
        redactor.add_secret(url)
        redactor.add_secret(make_url(url).password)


def _refused(inv: Invocation, error: OperatorError) -> int:
    print(f"gts-bot {' '.join(inv.args.command.path)}: {error}", file=sys.stderr)
    return error.exit_code


# -- accounts list ------------------------------------------------------------------------------------


def accounts_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="@USER:SERVER", help="Only this Matrix user's accounts.")
    parser.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")


def accounts_list(inv: Invocation) -> int:
    from bot.admin.accounts import AccountSummary, account_table, list_accounts
    from bot.runtime import open_database

    config = inv.load_config()
    _start_logging(config)

    async def fetch() -> list[AccountSummary]:
        async with open_database(config.database.url) as db:
            return await list_accounts(db.sessions, inv.args.user)

    accounts = asyncio.run(fetch())
    if inv.args.json:
        for account in accounts:
            print(json.dumps(account.as_json(), sort_keys=True))
    elif not accounts:
        print(f"{inv.args.user} has no connected accounts" if inv.args.user else "no connected accounts")
    else:
        print("\n".join(account_table(accounts)))
    return EXIT_OK


# -- accounts revoke ----------------------------------------------------------------------------------


def accounts_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, metavar="@USER:SERVER", help="The Matrix user.")
    parser.add_argument(
        "--account",
        metavar="ACCT|all",
        help="Which of the user's accounts, as user@instance (see `accounts list`), or all; "
        "may be left out when the user has only one.",
    )


def accounts_revoke(inv: Invocation) -> int:
    from bot.admin.accounts import RUNNING_BOT_NOTE, describe_outcome, revoke_accounts

    config = inv.load_config()
    _start_logging(config)
    user: str = inv.args.user
    try:
        outcomes = asyncio.run(revoke_accounts(config, user, inv.args.account))
    except OperatorError as error:
        return _refused(inv, error)
    for outcome in outcomes:
        print("\n".join(describe_outcome(user, outcome)))
    print(RUNNING_BOT_NOTE)
    return EXIT_OK


# -- migrate-db ---------------------------------------------------------------------------------------


def migrate_db_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", required=True, metavar="URL",
        help="The database to copy, e.g. sqlite+aiosqlite:///data/gts-bot.sqlite3 (only read).",
    )  # fmt: skip
    parser.add_argument(
        "--to", dest="target", required=True, metavar="URL",
        help="The empty database to fill, e.g. postgresql+asyncpg://gts:PASSWORD@db/gts.",
    )  # fmt: skip


def migrate_db(inv: Invocation) -> int:
    from bot.admin.dbcopy import copy_database, describe_url

    source: str = inv.args.source
    target: str = inv.args.target
    _start_logging(None, source, target)
    try:
        report = asyncio.run(copy_database(source, target))
    except OperatorError as error:
        return _refused(inv, error)
    print(f"copied {report.total} rows from {describe_url(source)} to {describe_url(target)}:")
    for table, rows in report.rows.items():
        print(f"  {table}: {rows}")
    print(
        f"Both databases are at schema revision {report.revision} and the row counts match. The secrets "
        "were copied still encrypted: keep using the same key file. Point database.url at the new "
        "database before starting gts-bot again."
    )
    return EXIT_OK


# -- keys retire --------------------------------------------------------------------------------------


def keys_retire(inv: Invocation) -> int:
    from bot.store.keys import retire_old_keys

    config = inv.load_config()
    _start_logging(config)
    key_file = config.encryption.key_file
    dropped = asyncio.run(retire_old_keys(config))
    if dropped == 0:
        print(f"nothing to retire: {key_file} holds only its current key")
        return EXIT_OK
    print(
        f"removed {dropped} old key{'s' if dropped != 1 else ''} from {key_file}; every stored secret "
        "decrypts with the current key alone"
    )
    print(
        "Database backups made before the last `keys rotate` need the previous key file; keep a copy of it "
        "with those backups, or discard them together."
    )
    return EXIT_OK
