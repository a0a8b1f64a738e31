"""The connect conversation as a persisted state machine.

    (no flow) --start--> PENDING --complete(code)--> CONNECTED (account stored, flow gone)
                            |--cancel / any failed exchange / expiry--> (no flow)
                            |--signed in as another account than the one it upgrades--> (no flow)

A flow started by `allow-actions` upgrades one stored account: its code is accepted only when the user
signs in as that account; otherwise nothing is stored and the new token is revoked at once.

A pending flow lives in the database (a restart keeps it), expires after `flow_ttl`, and is single use:
the first code submitted consumes it whatever the outcome, so a flow cannot be used to guess codes.
The code is accepted only from the flow's Matrix user, in the DM the flow was started for.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.commands.throttle import InstanceShare
from bot.config import FediverseConfig, LimitsConfig
from bot.errors import CommandError, FediverseError, InvalidClientError, InvalidInstanceError
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.models import AppRegistration, FediverseAccount, TokenGrant
from bot.fediverse.oauth import authorize_url, code_lifetime_minutes
from bot.fediverse.scopes import (
    KNOWN_SCOPES,
    action_scopes,
    can_act,
    normalize_scopes,
    relay_scope_problem,
    scopes_cover,
    server_scopes,
    streams_with,
)
from bot.must_finish import MustFinish
from bot.store.keyring import KeyRing
from bot.store.records import AccountId, AccountRecord, AppId, AppRecord, Clock, utc_now
from bot.store.repositories import Repositories

log = logging.getLogger(__name__)

OnConnected = Callable[[AccountId], Awaitable[None]]

# Requests a user's command costs the instance, at most: the probe (instance v1 and v2, nodeinfo link and
# document) and an app registration; then the code exchange, the account check, the starting cursor
# and the revoke of a replaced token.
START_REQUESTS = 5
COMPLETE_REQUESTS = 4
# `connect <instance> interactive`: ask for the action scopes too (issue 12), not only what relaying needs.
INTERACTIVE = "interactive"


@dataclass(frozen=True)
class StartedFlow:
    authorize_url: str
    instance: InstanceRef
    scopes: tuple[str, ...]
    expires_at: datetime
    software: str | None
    code_minutes: int | None
    """About how long the server keeps a code valid (None: not known for this server)."""
    replaced_earlier: bool
    """An earlier request that still waited for its code was cancelled by this one."""
    with_actions: bool = False
    """The flow asks for the scopes to act (reply, favourite, boost, follow requests) as well."""


@dataclass(frozen=True)
class Connected:
    account: AccountRecord
    instance: InstanceRef
    streaming_possible: bool
    """False when this server does not stream with the granted scopes (GoToSocial needs `read`): the bot
    polls instead."""
    acting_allowed: bool = False
    """The granted scopes let the bot act for the account (issue 12)."""


def requested_scopes(args: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    """The scopes a user asked for (`read`, or `read:notifications,profile`), checked for relaying."""
    if not args:
        return normalize_scopes(default)
    scopes = normalize_scopes(" ".join(args).replace(",", " "))
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise CommandError(
            f"Unknown scope {unknown[0][:40]!r}. Use e.g. `read`, or `read:notifications profile`."
        )
    problem = relay_scope_problem(scopes)
    if problem is not None:
        raise CommandError(
            f"Those scopes will not do: {problem}. Ask for `read`, or for `read:notifications profile`."
        )
    return scopes


def instance_permitted(host: str, allowlist: tuple[str, ...], denylist: tuple[str, ...]) -> bool:
    host = host.lower()
    if any(fnmatch.fnmatchcase(host, pattern) for pattern in denylist):
        return False
    return not allowlist or any(fnmatch.fnmatchcase(host, pattern) for pattern in allowlist)


def instance_from_key(key: str, *, allow_http: bool) -> InstanceRef:
    """Rebuild an InstanceRef from the base URL the store keeps.

    An http:// instance stored while `allow_http` was on is refused once it is off: its token and the
    app's client secret must not travel in plaintext.
    """
    return parse_instance(key, allow_http=allow_http)


class ConnectFlows:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        client: FediverseClient,
        fediverse: FediverseConfig,
        limits: LimitsConfig,
        flow_ttl: timedelta,
        on_connected: OnConnected,
        share: InstanceShare,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._client = client
        self._fediverse = fediverse
        self._limits = limits
        self._flow_ttl = flow_ttl
        self._on_connected = on_connected
        self._clock = clock
        self._finishing = MustFinish("connect-finish")
        self._share = share

    async def start(
        self,
        user_id: str,
        instance_text: str,
        scope_args: tuple[str, ...],
        dm_room_id: str,
        *,
        with_actions: bool = False,
        upgrades: AccountId | None = None,
    ) -> StartedFlow:
        """Start a connection. `interactive` among `scope_args` (or `with_actions`) adds the least scopes
        that let the bot act; relaying alone asks only for what it needs. `upgrades`: the stored account
        the user must sign in as (its token is replaced, not a second account added)."""
        with_actions = with_actions or any(a.lower() == INTERACTIVE for a in scope_args)
        scope_args = tuple(a for a in scope_args if a.lower() != INTERACTIVE)
        instance = parse_instance(instance_text, allow_http=self._fediverse.allow_http)
        if not instance_permitted(
            instance.host, self._fediverse.instance_allowlist, self._fediverse.instance_denylist
        ):
            raise InvalidInstanceError(f"This bot is not allowed to connect to {instance.display}.")
        scopes = requested_scopes(scope_args, self._fediverse.default_scopes)
        self._spend(user_id, instance, START_REQUESTS)
        info = await self._client.probe(instance)
        self._client.learn_software(instance, info.software)
        scopes = server_scopes(scopes, info.software)
        if with_actions:
            scopes = normalize_scopes(scopes + tuple(action_scopes(info.software)))
        # Apps are registered per scope set: GoToSocial refuses (invalid_scope) an authorization asking
        # for a scope its app did not register, so acting gets its own registration.
        app = await self._app_for(instance, scopes)
        async with self._sessions() as session, session.begin():
            repos = Repositories(session, self._keyring, self._clock)
            await repos.flows.delete_expired(self._clock())
            # One request at a time: a pasted code cannot say which instance it is for.
            replaced = await repos.flows.delete_for_user(user_id)
            flow = await repos.flows.add(
                matrix_user_id=user_id,
                instance=instance.key,
                app_id=app.id,
                scopes=scopes,
                dm_room_id=dm_room_id,
                ttl=self._flow_ttl,
                software=info.software,
                upgrades=upgrades,
            )
        url = authorize_url(
            instance, app.client_id, scopes, flow.oauth_state, pkce_verifier=flow.pkce_verifier
        )
        lifetime = code_lifetime_minutes(info.software)
        return StartedFlow(
            url, instance, scopes, flow.expires_at, info.software, lifetime, replaced > 0, with_actions
        )

    async def _app_for(self, instance: InstanceRef, scopes: tuple[str, ...]) -> AppRecord:
        """The stored app registration for this instance and scope set, registering one if needed."""
        async with self._sessions() as session:
            existing = await Repositories(session, self._keyring, self._clock).apps.get(instance.key, scopes)
        if existing is not None:
            return existing
        registered = await self._client.register_app(
            instance, scopes, client_name=self._fediverse.app_name, website=self._fediverse.app_website
        )
        async with self._sessions() as session, session.begin():
            apps = Repositories(session, self._keyring, self._clock).apps
            again = await apps.get(instance.key, scopes)  # another user may have registered meanwhile
            if again is not None:
                return again
            return await apps.add(
                instance=instance.key,
                scopes=scopes,
                client_id=registered.client_id,
                client_secret=registered.client_secret,
            )

    def _spend(self, user_id: str, instance: InstanceRef, requests: int) -> None:
        wait = self._share.spend(user_id, instance.key, requests)
        if wait is not None:
            raise CommandError(
                f"You have used your share of requests to {instance.display} for now (every user of an "
                f"instance shares its limit). Try again in {max(1, round(wait / 60))} minute(s)."
            )

    async def has_pending(self, user_id: str) -> bool:
        async with self._sessions() as session:
            return await Repositories(session, self._keyring, self._clock).flows.count_for_user(user_id) > 0

    async def cancel(self, user_id: str) -> int:
        async with self._sessions() as session, session.begin():
            return await Repositories(session, self._keyring, self._clock).flows.delete_for_user(user_id)

    async def burn(self, user_id: str, code: str) -> bool:
        """A code of `user_id`'s was seen outside their DM: redeem it at once and revoke what it gives.

        Redacting the message is not enough: every member's client already has it, the code stays valid
        for minutes, and the app is shared per instance and scopes, so another member's own flow could
        redeem it. Redeemed here first (through the same guarded, paced client), it is worth nothing.
        The user's pending flow is used up either way. True when a token was obtained and revoked; False
        when there was no flow to say which instance the code is for, or the instance refused the code.
        """
        async with self._sessions() as session, session.begin():
            repos = Repositories(session, self._keyring, self._clock)
            flows = await repos.flows.get_for_user(user_id)
            await repos.flows.delete_for_user(user_id)
            apps = [await repos.apps.get_by_id(flow.app_id) for flow in flows]
        for flow, app_record in zip(flows, apps, strict=True):
            if app_record is None:
                continue
            try:
                instance = instance_from_key(flow.instance, allow_http=self._fediverse.allow_http)
                grant = await self._client.exchange_code(
                    instance, registration_of(app_record), code, flow.pkce_verifier
                )
            except FediverseError as exc:
                log.info("a leaked code of %s could not be redeemed (%s)", user_id, type(exc).__name__)
                continue
            await self._finishing.run(
                self._revoke_quietly(instance, registration_of(app_record), grant.access_token)
            )
            log.warning("a leaked code of %s was redeemed by the bot and its token revoked", user_id)
            return True
        return False

    async def complete(self, user_id: str, room_id: str, code: str) -> Connected:
        """Exchange the pasted code for a token, verify it, and store the account."""
        async with self._sessions() as session, session.begin():
            repos = Repositories(session, self._keyring, self._clock)
            waiting = [f for f in await repos.flows.get_for_user(user_id) if f.dm_room_id == room_id]
            if not waiting:
                raise CommandError(
                    "No connection is waiting for a code here. Start one with `connect <instance>` "
                    "(a request is valid for "
                    f"{int(self._flow_ttl.total_seconds() // 60)} minutes)."
                )
            # Checked before the flow is used up, so a refused code can be sent again later.
            self._spend(user_id, instance_from_key(waiting[0].instance, allow_http=True), COMPLETE_REQUESTS)
            flow = await repos.flows.consume(waiting[0].id)
            app_record = await repos.apps.get_by_id(waiting[0].app_id)
            upgrades = None if flow is None else flow.upgrades
            upgraded = None if upgrades is None else await repos.accounts.get(upgrades)
        if flow is None or app_record is None:
            raise CommandError("That connection request was already used. Start again with `connect`.")
        if flow.upgrades is not None and upgraded is None:
            raise CommandError(
                "The account this request was for is no longer connected; nothing was changed."
            )
        instance = instance_from_key(flow.instance, allow_http=self._fediverse.allow_http)
        app = registration_of(app_record)
        try:
            grant = await self._client.exchange_code(instance, app, code, flow.pkce_verifier)
        except InvalidClientError:
            await self._forget_app(app_record)
            raise
        # From here on a live token exists: it must end up stored or revoked, whatever happens to the
        # command (its deadline cancels it at any await).
        try:
            account, granted, cursor = await self._check_grant(instance, flow.scopes, grant, upgraded)
        except BaseException:
            await self._finishing.run(self._revoke_quietly(instance, app, grant.access_token))
            raise
        return await self._finishing.run(
            self._store(
                user_id, instance, app_record, account, granted, cursor, grant.access_token, flow.software
            )
        )

    async def _check_grant(
        self, instance: InstanceRef, asked: str, grant: TokenGrant, upgraded: AccountRecord | None
    ) -> tuple[FediverseAccount, tuple[str, ...], str | None]:
        """Whose token it is (the account being upgraded, if any), whether it has the scopes asked for,
        and where relaying starts."""
        account = await self._client.verify_credentials(instance, grant.access_token)
        if upgraded is not None and not same_account(upgraded, instance, account):
            log.info("an upgrade of account %s was signed in as another account; nothing stored", upgraded.id)
            raise CommandError(
                f"You signed in as @{account.acct[:200]}, but this request was for @{upgraded.acct}. "
                "Nothing was changed, and I revoked the access you just gave (unless another of your "
                "connections uses it). "
                f"Sign in as @{upgraded.acct} and try again."
            )
        granted = grant.scope or tuple(asked.split())
        if not scopes_cover(granted, asked):
            raise CommandError(
                f"{instance.display} granted only `{' '.join(granted) or 'nothing'}`, not the "
                f"`{asked}` that was asked for. Nothing was stored; try again."
            )
        cursor = await self._newest_notification_id(instance, grant.access_token)
        return account, granted, cursor

    async def _store(
        self,
        user_id: str,
        instance: InstanceRef,
        app_record: AppRecord,
        account: FediverseAccount,
        granted: tuple[str, ...],
        cursor: str | None,
        token: str,
        software: str | None,
    ) -> Connected:
        """Store the verified account (or revoke its token when the user has too many), run to its end."""
        app = registration_of(app_record)
        async with self._sessions() as session, session.begin():
            repos = Repositories(session, self._keyring, self._clock)
            existing = await repos.accounts.list_for_user(user_id)
            previous = next(
                (a for a in existing if a.fediverse_account_id == account.id and a.instance == instance.key),
                None,
            )
            if previous is None and len(existing) >= self._limits.max_accounts_per_user:
                await self._revoke_quietly(instance, app, token)
                raise CommandError(
                    f"You already have {len(existing)} connected accounts, the most this bot allows. "
                    "Revoke one first; nothing was stored."
                )
            stored = await repos.accounts.upsert(
                matrix_user_id=user_id,
                instance=instance.key,
                app_id=app_record.id,
                fediverse_account_id=account.id,
                acct=account.acct,
                token=token,
                scopes=granted,
                software=software,
            )
            if previous is None:
                await repos.accounts.set_cursor(stored.id, cursor)
        # The relay switches to the new token before the old one is revoked, so it never sees a 401
        # for a connection that was just renewed.
        await self._on_connected(stored.id)
        if previous is not None and previous.token != token:
            old_app = await self._app_by_id(previous.app_id)
            if old_app is not None:
                await self._revoke_quietly(instance, old_app, previous.token)
        return Connected(stored, instance, streams_with(granted, software), can_act(granted, software))

    async def settle(self) -> None:
        """Wait for exchanges whose command gave up (deadline) to be stored or revoked."""
        await self._finishing.wait()

    async def _newest_notification_id(self, instance: InstanceRef, token: str) -> str | None:
        """Where relaying starts: after the newest notification now, so connecting floods nothing."""
        try:
            page = await self._client.notifications(instance, token, limit=1)
        except FediverseError as exc:
            log.info(
                "no starting cursor for a new account on %s (%s); the relay sets it",
                instance.display,
                type(exc).__name__,
            )
            return None
        return page.items[0].id if page.items else None

    async def _app_by_id(self, app_id: AppId) -> AppRegistration | None:
        async with self._sessions() as session:
            record = await Repositories(session, self._keyring, self._clock).apps.get_by_id(app_id)
        return None if record is None else registration_of(record)

    async def _forget_app(self, app: AppRecord) -> None:
        """The instance no longer knows this registration: drop it so the next connect registers anew."""
        try:
            async with self._sessions() as session, session.begin():
                await Repositories(session, self._keyring, self._clock).apps.delete(app.id)
        except IntegrityError:
            log.info("app registration %s is still used by connected accounts; kept", app.id)

    async def _revoke_quietly(self, instance: InstanceRef, app: AppRegistration, token: str) -> None:
        """Revoke a token the bot does not keep, unless a stored connection uses it: Mastodon and Akkoma
        hand out the same token again for the same account, app and scopes."""
        async with self._sessions() as session, session.begin():
            in_use = await Repositories(session, self._keyring, self._clock).accounts.ids_using_token(
                instance.key, token
            )
        if in_use:
            log.info("a token on %s is kept: %d stored connection(s) use it", instance.display, len(in_use))
            return
        try:
            await self._client.revoke(instance, app, token)
        except FediverseError as exc:
            log.warning("could not revoke a token on %s: %s", instance.display, type(exc).__name__)


def same_account(stored: AccountRecord, instance: InstanceRef, signed_in: FediverseAccount) -> bool:
    """Whether the account a token belongs to is this stored one: the same instance, remote id and acct."""
    return (
        stored.instance == instance.key
        and stored.fediverse_account_id == signed_in.id
        and stored.acct.lower() == signed_in.acct.lower()
    )


def registration_of(record: AppRecord) -> AppRegistration:
    """The stored app registration in the form the fediverse client takes."""
    return AppRegistration(record.client_id, record.client_secret, tuple(record.scopes.split()))


__all__ = [
    "INTERACTIVE",
    "ConnectFlows",
    "Connected",
    "StartedFlow",
    "instance_from_key",
    "instance_permitted",
    "registration_of",
    "requested_scopes",
    "same_account",
]
