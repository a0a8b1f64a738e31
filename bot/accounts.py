"""What a user (or the operator) does with connected accounts: list, revoke, filter, pause, forget."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.connect import instance_from_key, registration_of
from bot.errors import CommandError, FediverseError, RevokeUnsupportedError
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef
from bot.fediverse.notification_types import TYPE_NAMES
from bot.must_finish import MustFinish
from bot.store.keyring import KeyRing
from bot.store.models import AccountState
from bot.store.records import AccountId, AccountRecord, Clock, utc_now
from bot.store.repositories import Repositories

log = logging.getLogger(__name__)


class RelayControl(Protocol):
    async def restart_account(self, account_id: AccountId) -> None: ...

    async def remove_account(self, account_id: AccountId) -> None: ...

    async def forget_user(self, matrix_user_id: str) -> None: ...


@dataclass(frozen=True)
class RevokeOutcome:
    acct: str
    instance: InstanceRef
    revoked_on_server: bool
    problem: str | None
    """Why the server-side revoke did not happen (already user-facing text), when it did not."""
    kept_for_others: int = 0
    """The server-side token was left alive because this many other stored connections use it (Mastodon
    and Akkoma give the same token to each connection of one account through one app)."""

    @property
    def manual_revoke_hint(self) -> str:
        base = self.instance.base_url
        return (
            f"Remove the bot's access by hand in {self.instance.display}'s settings: on GoToSocial, "
            f"{base}/settings → Access Tokens; on Mastodon, {base}/oauth/authorized_applications."
        )


def select_accounts(accounts: Sequence[AccountRecord], selector: str | None) -> list[AccountRecord]:
    """Which accounts `selector` names: `all`, a number from `status`, an acct, or an instance host.

    With no selector, the only account; several accounts need a selector.
    """
    if not accounts:
        raise CommandError("You have no connected accounts.")
    if selector is None:
        if len(accounts) == 1:
            return [accounts[0]]
        raise CommandError(
            "You have several accounts; say which: "
            + ", ".join(f"{i}. @{a.acct}" for i, a in enumerate(accounts, 1))
            + " (or `all`)."
        )
    wanted = selector.strip().lstrip("@").lower()
    if wanted == "all":
        return list(accounts)
    if wanted.isdigit() and 1 <= int(wanted) <= len(accounts):
        return [accounts[int(wanted) - 1]]
    by_acct = [a for a in accounts if a.acct.lower() == wanted]
    if by_acct:
        return by_acct
    by_host = [a for a in accounts if instance_host(a.instance) == wanted]
    if len(by_host) == 1:
        return by_host
    if len(by_host) > 1:
        raise CommandError(f"Several of your accounts are on {wanted[:100]}; name one by its @user@host.")
    raise CommandError(f"None of your accounts matches {selector[:100]!r}. See `status` for the list.")


def names_accounts(word: str) -> bool:
    """Whether `word` (the first argument of `notify`) picks accounts the way `select_accounts` reads it
    — an @acct, a number from `status`, or an instance host — rather than naming a notification type.
    A host has a dot and is not a type (a few types have dots too: `admin.sign_up`)."""
    lowered = word.lower()
    if "@" in word or word.isdigit():
        return True
    return "." in word and "," not in word and lowered != "all" and lowered not in TYPE_NAMES


def instance_host(key: str) -> str:
    return key.split("://", 1)[-1].lower()


def parse_types(args: Sequence[str]) -> tuple[str, ...] | None:
    """`all` → None (every type); otherwise the named types, which must be known."""
    words = [w for arg in args for w in arg.replace(",", " ").split()]
    if not words or words == ["all"]:
        return None
    unknown = [w for w in words if w not in TYPE_NAMES]
    if unknown:
        raise CommandError(
            f"Unknown notification type {unknown[0][:40]!r}. Known: {', '.join(TYPE_NAMES)}, or `all`."
        )
    return tuple(sorted(set(words)))


class AccountsService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        client: FediverseClient,
        relay: RelayControl,
        allow_http: bool,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._client = client
        self._relay = relay
        self._allow_http = allow_http
        self._clock = clock
        self._finishing = MustFinish("revoke")

    def _repos(self, session: AsyncSession) -> Repositories:
        return Repositories(session, self._keyring, self._clock)

    async def for_user(self, user_id: str) -> list[AccountRecord]:
        async with self._sessions() as session:
            return await self._repos(session).accounts.list_for_user(user_id)

    async def revoke(self, user_id: str, selector: str | None) -> list[RevokeOutcome]:
        """Revoke on the server, stop relaying, and delete the token and cursor here.

        Local deletion happens even when the server cannot revoke; the outcome says so.
        """
        chosen = select_accounts(await self.for_user(user_id), selector)
        # Once started, a revoke runs to its end even past the command's deadline: the account is then
        # deleted here, not left stopped with its token stored.
        return [await self._finishing.run(self._revoke_one(account)) for account in chosen]

    async def settle(self) -> None:
        """Wait for revokes whose command gave up (deadline) to finish."""
        await self._finishing.wait()

    async def _revoke_one(self, account: AccountRecord) -> RevokeOutcome:
        await self._relay.remove_account(account.id)
        instance = instance_from_key(account.instance, allow_http=self._allow_http)
        async with self._sessions() as session, session.begin():
            repos = self._repos(session)
            app = await repos.apps.get_by_id(account.app_id)
            sharing = [
                other
                for other in await repos.accounts.ids_using_token(account.instance, account.token)
                if other != account.id
            ]
        problem: str | None = None
        if sharing:
            async with self._sessions() as session, session.begin():
                await self._repos(session).delete_account(account.id)
            log.info(
                "account %s of %s deleted; its token is kept for %d other connection(s)",
                account.id,
                account.matrix_user_id,
                len(sharing),
            )
            return RevokeOutcome(account.acct, instance, False, None, kept_for_others=len(sharing))
        if app is None:
            problem = "the bot no longer has this app's registration"
        else:
            registration = registration_of(app)
            try:
                await self._client.revoke(instance, registration, account.token)
            except RevokeUnsupportedError:
                problem = f"{instance.display} has no way for apps to revoke their tokens"
            except FediverseError as exc:
                problem = str(exc)
        async with self._sessions() as session, session.begin():
            await self._repos(session).delete_account(account.id)
        self._keyring.forget(account.token)  # the log redactor stops tracking it
        log.info(
            "account %s of %s revoked (on server: %s)", account.id, account.matrix_user_id, problem is None
        )
        return RevokeOutcome(account.acct, instance, problem is None, problem)

    async def set_types(self, user_id: str, selector: str | None, types: tuple[str, ...] | None) -> list[str]:
        chosen = select_accounts(await self.for_user(user_id), selector)
        async with self._sessions() as session, session.begin():
            for account in chosen:
                await self._repos(session).accounts.set_notify_types(account.id, types)
        for account in chosen:
            if account.state is AccountState.ACTIVE:
                await self._relay.restart_account(account.id)
        return [a.acct for a in chosen]

    async def set_paused(self, user_id: str, selector: str | None, paused: bool) -> list[str]:
        chosen = select_accounts(await self.for_user(user_id), selector)
        changed = [a for a in chosen if a.state is not AccountState.BROKEN]
        new_state = AccountState.PAUSED if paused else AccountState.ACTIVE
        async with self._sessions() as session, session.begin():
            for account in changed:
                await self._repos(session).accounts.set_state(account.id, new_state)
        for account in changed:
            if paused:
                await self._relay.remove_account(account.id)
            else:
                await self._relay.restart_account(account.id)
        return [a.acct for a in changed]

    async def forget(self, user_id: str) -> list[RevokeOutcome]:
        """Revoke every account and delete all the bot stores about this user."""
        accounts = await self.for_user(user_id)
        outcomes = [await self._finishing.run(self._revoke_one(account)) for account in accounts]
        await self._relay.forget_user(user_id)  # queued notifications and outbox rows go too
        async with self._sessions() as session, session.begin():
            repos = self._repos(session)
            await repos.flows.delete_for_user(user_id)
            await repos.dm_rooms.delete(user_id)
            await repos.delete_user_actions(user_id)
        return outcomes
