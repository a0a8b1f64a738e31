"""`gts-bot accounts list|revoke`: the connected fediverse accounts, for operators."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from bot.admin import OperatorError
from bot.cli.common import EXIT_OK, refused, start_logging

if TYPE_CHECKING:
    from bot.admin.accounts import AccountSummary
    from bot.cli import Invocation

__all__ = ["list_accounts", "revoke_accounts"]


def list_accounts(invocation: Invocation) -> int:
    from bot.admin import accounts
    from bot.resources import open_database

    config = invocation.load_config()
    start_logging(config)
    user: str | None = invocation.args.user

    async def fetch() -> list[AccountSummary]:
        async with open_database(config.database.url) as db:
            return await accounts.list_accounts(db.sessions, user)

    found = asyncio.run(fetch())
    if invocation.args.json:
        for account in found:
            print(json.dumps(account.as_json(), sort_keys=True))
    elif not found:
        print(f"{user} has no connected accounts" if user else "no connected accounts")
    else:
        print("\n".join(accounts.account_table(found)))
    return EXIT_OK


def revoke_accounts(invocation: Invocation) -> int:
    from bot.admin import accounts

    config = invocation.load_config()
    start_logging(config)
    user: str = invocation.args.user
    try:
        outcomes = asyncio.run(accounts.revoke_accounts(config, user, invocation.args.account))
    except OperatorError as error:
        return refused(invocation, error)
    for outcome in outcomes:
        print("\n".join(accounts.describe_outcome(user, outcome)))
    print(accounts.RUNNING_BOT_NOTE)
    return EXIT_OK
