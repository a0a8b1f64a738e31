"""Connected accounts for the operator: list them (no secret is ever read) and revoke them.

Revoking reuses `AccountsService.revoke`, the code behind the users' own `revoke` command: it revokes the
token on the instance (best effort), then deletes the token and cursor here even when the instance could
not revoke it. The command runs in its own process, not in the bot's, so it cannot stop a running bot's
relay; see `RUNNING_BOT_NOTE` for what that means and why operators should run it with the bot stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.accounts import AccountsService, RevokeOutcome
from bot.admin import EXIT_NOTHING_SELECTED, OperatorError
from bot.config import Config
from bot.fediverse.guard import Resolver
from bot.resources import open_database, open_fediverse_client
from bot.store.key_rotation import open_keyring
from bot.store.models import Account, RelayLease
from bot.store.records import AccountId, words

__all__ = [
    "RUNNING_BOT_NOTE",
    "AccountSummary",
    "account_table",
    "describe_outcome",
    "list_accounts",
    "pick_accounts",
    "revoke_accounts",
]

RUNNING_BOT_NOTE = (
    "Note: this command cannot reach a running gts-bot, so run it while the bot is stopped. A bot that "
    "was running keeps the token it had loaded: where the instance revoked it, the bot's next request "
    "is rejected and it tells the user the account stopped working; where the instance could not revoke "
    "it, the bot keeps relaying that account until it is restarted."
)


@dataclass(frozen=True)
class AccountSummary:
    """What an operator may see of a connected account: everything but the token."""

    id: AccountId
    matrix_user_id: str
    acct: str
    instance: str
    state: str
    notify_types: tuple[str, ...] | None  # None means every type
    cursor: str | None
    created_at: datetime
    updated_at: datetime
    worker: str | None = None  # the relay worker holding its lease (split deployments), None if none
    lease_expires_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user": self.matrix_user_id,
            "acct": self.acct,
            "instance": self.instance,
            "state": self.state,
            "notify_types": None if self.notify_types is None else list(self.notify_types),
            "cursor": self.cursor,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "worker": self.worker,
            "lease_expires_at": None if self.lease_expires_at is None else self.lease_expires_at.isoformat(),
        }


async def list_accounts(
    sessions: async_sessionmaker[AsyncSession], matrix_user_id: str | None = None
) -> list[AccountSummary]:
    """Every connected account (or one user's), by user then age. The token column is never selected."""
    stmt = select(
        Account.id,
        Account.matrix_user_id,
        Account.acct,
        Account.instance,
        Account.state,
        Account.notify_types,
        Account.cursor,
        Account.created_at,
        Account.updated_at,
        RelayLease.holder,
        RelayLease.expires_at,
    ).outerjoin(RelayLease, RelayLease.account_id == Account.id)
    stmt = stmt.order_by(Account.matrix_user_id, Account.id)
    if matrix_user_id is not None:
        stmt = stmt.where(Account.matrix_user_id == matrix_user_id)
    async with sessions() as session:
        rows = (await session.execute(stmt)).all()
    return [
        AccountSummary(
            id=AccountId(row.id),
            matrix_user_id=row.matrix_user_id,
            acct=row.acct,
            instance=row.instance,
            state=row.state,
            notify_types=words(row.notify_types),
            cursor=row.cursor,
            created_at=row.created_at,
            updated_at=row.updated_at,
            worker=row.holder,
            lease_expires_at=row.expires_at if row.holder is not None else None,
        )
        for row in rows
    ]


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def _lease(account: AccountSummary) -> str:
    """Which relay worker holds the account, until when ("-": none, as in a single-process bot)."""
    if account.worker is None or account.lease_expires_at is None:
        return "-"
    return f"{account.worker} (lease until {_when(account.lease_expires_at)})"


def account_table(accounts: Sequence[AccountSummary]) -> list[str]:
    """The accounts as an aligned text table, one line per account after the header."""
    header = ("USER", "ACCOUNT", "INSTANCE", "STATE", "NOTIFY", "CURSOR", "CREATED", "UPDATED", "WORKER")
    rows = [
        (
            a.matrix_user_id,
            "@" + a.acct,
            a.instance,
            a.state,
            "all" if a.notify_types is None else ",".join(a.notify_types),
            a.cursor or "-",
            _when(a.created_at),
            _when(a.updated_at),
            _lease(a),
        )
        for a in accounts
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def pick_accounts(accounts: Sequence[AccountSummary], user: str, selector: str | None) -> str:
    """Check that `selector` (an acct, `all`, or None for a user's only account) names some of `accounts`;
    return the selector `AccountsService.revoke` takes. Raises OperatorError naming what exists."""
    if not accounts:
        raise OperatorError(f"{user} has no connected accounts", exit_code=EXIT_NOTHING_SELECTED)
    listed = ", ".join("@" + a.acct for a in accounts)
    if selector is None:
        if len(accounts) == 1:
            return accounts[0].acct
        raise OperatorError(
            f"{user} has {len(accounts)} accounts ({listed}); choose with --account ACCT or --account all",
            exit_code=EXIT_NOTHING_SELECTED,
        )
    wanted = selector.strip().lstrip("@").lower()
    if wanted == "all" or any(a.acct.lower() == wanted for a in accounts):
        return wanted
    raise OperatorError(
        f"{user} has no account {selector!r}; their accounts: {listed}", exit_code=EXIT_NOTHING_SELECTED
    )


class _NotRelaying:
    """The relay control of a process that relays nothing (the bot is a different process)."""

    async def restart_account(self, account_id: AccountId) -> None:
        return None

    async def remove_account(self, account_id: AccountId) -> None:
        return None

    async def forget_user(self, matrix_user_id: str) -> None:
        return None


async def revoke_accounts(
    config: Config, user: str, selector: str | None, *, resolver: Resolver | None = None
) -> list[RevokeOutcome]:
    """Revoke `user`'s selected accounts on their instances and delete them here."""
    async with open_database(config.database.url) as db:
        chosen = pick_accounts(await list_accounts(db.sessions, user), user, selector)
        # Only now, with accounts (so secrets) known to exist: open_keyring never creates a key file then.
        keyring = await open_keyring(config.encryption.key_file, db.sessions)
        async with open_fediverse_client(config.fediverse, resolver) as client:
            service = AccountsService(
                sessions=db.sessions,
                keyring=keyring,
                client=client,
                relay=_NotRelaying(),
                allow_http=config.fediverse.allow_http,
            )
            return await service.revoke(user, chosen)


def describe_outcome(user: str, outcome: RevokeOutcome) -> list[str]:
    if outcome.revoked_on_server:
        return [f"revoked @{outcome.acct} of {user} on {outcome.instance.display} and deleted it here"]
    return [
        f"deleted @{outcome.acct} of {user} here, but {outcome.instance.display} did not revoke its token: "
        f"{outcome.problem}",
        f"  tell the user: {outcome.manual_revoke_hint}",
    ]
