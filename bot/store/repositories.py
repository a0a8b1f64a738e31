"""Typed access to the stored data. Repositories never commit: the caller owns the transaction.

Secrets are encrypted on the way in and decrypted on the way out through a KeyRing; records are frozen
dataclasses whose secret fields are left out of ``repr``. Timestamps come from an injected clock.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.fediverse.oauth import new_pkce_verifier
from bot.fediverse.scopes import scope_string
from bot.store.action_journal import ActionJournalRepository
from bot.store.encrypted_columns import account_token_aad, app_secret_aad, pkce_verifier_aad
from bot.store.event_map import RelayedEventsRepository
from bot.store.keyring import KeyRing
from bot.store.matrix_state import DmRoomsRepository, HandledEventsRepository, MatrixSessionRepository
from bot.store.models import (
    Account,
    AccountState,
    FediverseApp,
    PendingFlow,
)
from bot.store.records import (
    AccountId,
    AccountRecord,
    AppId,
    AppRecord,
    Clock,
    FlowId,
    FlowRecord,
    MatrixSessionRecord,
    utc_now,
    words,
)

__all__ = [
    "AccountId",
    "AccountRecord",
    "AccountState",
    "AccountsRepository",
    "AppId",
    "AppRecord",
    "AppsRepository",
    "Clock",
    "DmRoomsRepository",
    "FlowId",
    "FlowRecord",
    "FlowsRepository",
    "HandledEventsRepository",
    "MatrixSessionRecord",
    "MatrixSessionRepository",
    "Repositories",
    "utc_now",
]


class AppsRepository:
    """OAuth app registrations, one per (instance, scope set)."""

    def __init__(self, session: AsyncSession, keyring: KeyRing, clock: Clock = utc_now) -> None:
        self._session, self._keyring, self._clock = session, keyring, clock

    def _record(self, row: FediverseApp) -> AppRecord:
        secret = self._keyring.decrypt(
            row.client_secret_encrypted, app_secret_aad(row.instance, row.scopes, row.client_id)
        )
        return AppRecord(AppId(row.id), row.instance, row.scopes, row.client_id, secret, row.created_at)

    async def get(self, instance: str, scopes: str | Iterable[str]) -> AppRecord | None:
        stmt = select(FediverseApp).where(
            FediverseApp.instance == instance, FediverseApp.scopes == scope_string(scopes)
        )
        row = (await self._session.execute(stmt)).scalar_one_or_none()
        return None if row is None else self._record(row)

    async def get_by_id(self, app_id: AppId) -> AppRecord | None:
        row = await self._session.get(FediverseApp, app_id)
        return None if row is None else self._record(row)

    async def add(
        self, *, instance: str, scopes: str | Iterable[str], client_id: str, client_secret: str
    ) -> AppRecord:
        scope_text = scope_string(scopes)
        row = FediverseApp(
            instance=instance,
            scopes=scope_text,
            client_id=client_id,
            client_secret_encrypted=self._keyring.encrypt(
                client_secret, app_secret_aad(instance, scope_text, client_id)
            ),
            created_at=self._clock(),
        )
        self._session.add(row)
        await self._session.flush()
        return self._record(row)

    async def delete_unused(self, created_before: datetime) -> int:
        """Forget registrations no account and no pending flow uses (made before `created_before`).

        Every instance and scope set anyone tried gets a row; unused ones would otherwise pile up.
        The next `connect` to such an instance simply registers again.
        """
        in_use = select(Account.app_id).union(select(PendingFlow.app_id))
        stmt = delete(FediverseApp).where(
            FediverseApp.created_at < created_before, FediverseApp.id.not_in(in_use)
        )
        return _rowcount(await self._session.execute(stmt))

    async def delete(self, app_id: AppId) -> bool:
        """Delete an app (its pending flows go with it). Fails while accounts still use it."""
        result = await self._session.execute(delete(FediverseApp).where(FediverseApp.id == app_id))
        return _rowcount(result) > 0


class AccountsRepository:
    """Connected fediverse accounts; one Matrix user may have several."""

    def __init__(self, session: AsyncSession, keyring: KeyRing, clock: Clock = utc_now) -> None:
        self._session, self._keyring, self._clock = session, keyring, clock

    def _record(self, row: Account) -> AccountRecord:
        token = self._keyring.decrypt(
            row.token_encrypted,
            account_token_aad(row.matrix_user_id, row.instance, row.fediverse_account_id),
        )
        return AccountRecord(
            id=AccountId(row.id),
            matrix_user_id=row.matrix_user_id,
            instance=row.instance,
            app_id=AppId(row.app_id),
            fediverse_account_id=row.fediverse_account_id,
            acct=row.acct,
            token=token,
            scopes=row.scopes,
            cursor=row.cursor,
            state=AccountState(row.state),
            notify_types=words(row.notify_types),
            created_at=row.created_at,
            updated_at=row.updated_at,
            software=row.software,
        )

    async def upsert(
        self,
        *,
        matrix_user_id: str,
        instance: str,
        app_id: AppId,
        fediverse_account_id: str,
        acct: str,
        token: str,
        scopes: str | Iterable[str],
        software: str | None = None,
    ) -> AccountRecord:
        """Store a newly authorized account, or refresh the token of the same account connected again
        (keeping its cursor and notification filter, and making it active). `software`: the server's,
        as probed (None keeps what was known)."""
        now = self._clock()
        sealed = self._keyring.encrypt(
            token, account_token_aad(matrix_user_id, instance, fediverse_account_id)
        )
        stmt = select(Account).where(
            Account.matrix_user_id == matrix_user_id,
            Account.instance == instance,
            Account.fediverse_account_id == fediverse_account_id,
        )
        row = (await self._session.execute(stmt)).scalar_one_or_none()
        if row is None:
            row = Account(
                matrix_user_id=matrix_user_id,
                instance=instance,
                fediverse_account_id=fediverse_account_id,
                cursor=None,
                notify_types=None,
                created_at=now,
            )
            self._session.add(row)
        row.app_id = app_id
        row.acct = acct
        row.token_encrypted = sealed
        row.token_fingerprint = self._fingerprint(token)
        row.scopes = scope_string(scopes)
        if software is not None:
            row.software = software
        row.state = AccountState.ACTIVE.value
        row.updated_at = now
        await self._session.flush()
        return self._record(row)

    def _fingerprint(self, token: str) -> str:
        return self._keyring.fingerprint("account-token", token)

    async def ids_using_token(self, instance: str, token: str) -> list[AccountId]:
        """The stored accounts on `instance` whose token is `token` (any Matrix user).

        Mastodon and Akkoma give the same token to each connection of one account through one app, so a
        token must not be revoked while another of these still uses it. Compared by fingerprint; rows
        stored before fingerprints existed (until their next upsert) are compared by decrypting. Reads
        only, so it is safe inside another open transaction.
        """
        wanted = self._fingerprint(token)
        stmt = (
            select(Account)
            .where(
                Account.instance == instance,
                (Account.token_fingerprint == wanted) | Account.token_fingerprint.is_(None),
            )
            .order_by(Account.id)
        )
        found: list[AccountId] = []
        for row in (await self._session.execute(stmt)).scalars():
            stored = row.token_fingerprint or self._fingerprint(self._record(row).token)
            if hmac.compare_digest(stored, wanted):
                found.append(AccountId(row.id))
        return found

    async def get(self, account_id: AccountId) -> AccountRecord | None:
        row = await self._session.get(Account, account_id)
        return None if row is None else self._record(row)

    async def cursors_for_update(self, account_ids: Iterable[AccountId]) -> dict[AccountId, str | None]:
        """The stored cursor of each of these accounts that exists, its row locked until the transaction
        ends (PostgreSQL; SQLite has one writer anyway). One statement, nothing decrypted."""
        stmt = (
            select(Account.id, Account.cursor)
            .where(Account.id.in_(sorted(account_ids)))
            .order_by(Account.id)
            .with_for_update()
        )
        return {AccountId(i): cursor for i, cursor in (await self._session.execute(stmt)).all()}

    async def list_for_user(self, matrix_user_id: str) -> list[AccountRecord]:
        stmt = select(Account).where(Account.matrix_user_id == matrix_user_id).order_by(Account.id)
        return [self._record(row) for row in (await self._session.execute(stmt)).scalars()]

    async def list_active(self) -> list[AccountRecord]:
        stmt = select(Account).where(Account.state == AccountState.ACTIVE.value).order_by(Account.id)
        return [self._record(row) for row in (await self._session.execute(stmt)).scalars()]

    async def count_for_user(self, matrix_user_id: str) -> int:
        stmt = select(func.count()).select_from(Account).where(Account.matrix_user_id == matrix_user_id)
        return (await self._session.execute(stmt)).scalar_one()

    async def _update(self, account_id: AccountId, **values: Any) -> bool:
        stmt = update(Account).where(Account.id == account_id).values(updated_at=self._clock(), **values)
        return _rowcount(await self._session.execute(stmt)) > 0

    async def set_cursor(self, account_id: AccountId, cursor: str | None) -> bool:
        return await self._update(account_id, cursor=cursor)

    async def set_cursors(self, cursors: Mapping[AccountId, str]) -> None:
        """Set the cursor of each of these accounts, with one statement (an executemany)."""
        if not cursors:
            return
        now = self._clock()
        rows = [
            {"id": int(account_id), "cursor": cursor, "updated_at": now}
            for account_id, cursor in sorted(cursors.items())
        ]
        await self._session.execute(update(Account), rows)

    async def set_state(self, account_id: AccountId, state: AccountState) -> bool:
        return await self._update(account_id, state=AccountState(state).value)

    async def mark_broken_if_token(self, account_id: AccountId, token: str) -> bool:
        """Set BROKEN only while the stored token is still `token` (compare-and-set: a reconnect that
        stored a new token since must not be undone by a late 401 for the old one)."""
        stmt = select(Account).where(Account.id == account_id).with_for_update()
        row = (await self._session.execute(stmt)).scalar_one_or_none()
        if row is None or not hmac.compare_digest(self._record(row).token.encode(), token.encode()):
            return False
        return await self.set_state(account_id, AccountState.BROKEN)

    async def set_notify_types(self, account_id: AccountId, types: Iterable[str] | None) -> bool:
        """Relay only these notification types; None relays every type."""
        value = None if types is None else " ".join(sorted(set(types)))
        return await self._update(account_id, notify_types=value)

    async def delete(self, account_id: AccountId) -> bool:
        result = await self._session.execute(delete(Account).where(Account.id == account_id))
        return _rowcount(result) > 0

    async def delete_all_for_user(self, matrix_user_id: str) -> int:
        result = await self._session.execute(delete(Account).where(Account.matrix_user_id == matrix_user_id))
        return _rowcount(result)


class FlowsRepository:
    """Connect conversations waiting for an authorization code. Single use: `consume` deletes."""

    def __init__(self, session: AsyncSession, keyring: KeyRing, clock: Clock = utc_now) -> None:
        self._session, self._keyring, self._clock = session, keyring, clock

    def _record(self, row: PendingFlow) -> FlowRecord:
        return FlowRecord(
            id=FlowId(row.id),
            matrix_user_id=row.matrix_user_id,
            instance=row.instance,
            app_id=AppId(row.app_id),
            scopes=row.scopes,
            software=row.software,
            oauth_state=row.oauth_state,
            pkce_verifier=self._keyring.decrypt(
                row.pkce_verifier_encrypted, pkce_verifier_aad(row.oauth_state)
            ),
            dm_room_id=row.dm_room_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            upgrades=None if row.upgrades_account_id is None else AccountId(row.upgrades_account_id),
        )

    async def add(
        self,
        *,
        matrix_user_id: str,
        instance: str,
        app_id: AppId,
        scopes: str | Iterable[str],
        dm_room_id: str,
        ttl: timedelta,
        software: str | None = None,
        upgrades: AccountId | None = None,
    ) -> FlowRecord:
        now = self._clock()
        oauth_state = secrets.token_urlsafe(32)
        row = PendingFlow(
            matrix_user_id=matrix_user_id,
            instance=instance,
            app_id=app_id,
            scopes=scope_string(scopes),
            software=software[:64] if software else None,
            upgrades_account_id=upgrades,
            oauth_state=oauth_state,
            pkce_verifier_encrypted=self._keyring.encrypt(
                new_pkce_verifier(), pkce_verifier_aad(oauth_state)
            ),
            dm_room_id=dm_room_id,
            created_at=now,
            expires_at=now + ttl,
        )
        self._session.add(row)
        await self._session.flush()
        return self._record(row)

    async def get(self, flow_id: FlowId) -> FlowRecord | None:
        row = await self._session.get(PendingFlow, flow_id)
        return None if row is None else self._record(row)

    async def get_by_state(self, oauth_state: str) -> FlowRecord | None:
        stmt = select(PendingFlow).where(PendingFlow.oauth_state == oauth_state)
        row = (await self._session.execute(stmt)).scalar_one_or_none()
        return None if row is None else self._record(row)

    async def get_for_user(self, matrix_user_id: str) -> list[FlowRecord]:
        """The user's flows that have not expired, newest first."""
        stmt = (
            select(PendingFlow)
            .where(PendingFlow.matrix_user_id == matrix_user_id, PendingFlow.expires_at > self._clock())
            .order_by(PendingFlow.created_at.desc(), PendingFlow.id.desc())
        )
        return [self._record(row) for row in (await self._session.execute(stmt)).scalars()]

    async def count_for_user(self, matrix_user_id: str) -> int:
        """How many unexpired flows the user has open."""
        stmt = (
            select(func.count())
            .select_from(PendingFlow)
            .where(PendingFlow.matrix_user_id == matrix_user_id, PendingFlow.expires_at > self._clock())
        )
        return (await self._session.execute(stmt)).scalar_one()

    async def consume(self, flow_id: FlowId) -> FlowRecord | None:
        """Delete the flow and return it; None if it is already gone (used by someone else).

        The record is returned even if it has expired, so the caller can say so; check `expired(now)`.
        Store the account in the same transaction so a crash leaves either the flow or the account.
        """
        stmt = delete(PendingFlow).where(PendingFlow.id == flow_id).returning(PendingFlow)
        row = (await self._session.execute(stmt)).scalar_one_or_none()
        return None if row is None else self._record(row)

    async def delete_expired(self, now: datetime | None = None) -> int:
        cutoff = self._clock() if now is None else now
        result = await self._session.execute(delete(PendingFlow).where(PendingFlow.expires_at <= cutoff))
        return _rowcount(result)

    async def delete_for_user(self, matrix_user_id: str) -> int:
        stmt = delete(PendingFlow).where(PendingFlow.matrix_user_id == matrix_user_id)
        return _rowcount(await self._session.execute(stmt))


class Repositories:
    """All repositories over one session (one transaction), for callers that need several."""

    def __init__(self, session: AsyncSession, keyring: KeyRing, clock: Clock = utc_now) -> None:
        self.session = session
        self.apps = AppsRepository(session, keyring, clock)
        self.accounts = AccountsRepository(session, keyring, clock)
        self.flows = FlowsRepository(session, keyring, clock)
        self.dm_rooms = DmRoomsRepository(session, clock)
        self.matrix_session = MatrixSessionRepository(session, keyring, clock)
        self.handled_events = HandledEventsRepository(session, clock)
        self.relayed_events = RelayedEventsRepository(session, clock)
        self.action_journal = ActionJournalRepository(session, clock, keyring)

    async def delete_account(self, account_id: AccountId) -> bool:
        """Delete an account with its event map and action journal."""
        await self.relayed_events.delete_for_account(account_id)
        await self.action_journal.delete_for_account(account_id)
        return await self.accounts.delete(account_id)

    async def delete_user_actions(self, matrix_user_id: str) -> None:
        """Forget every relayed event and action of a user (forget-me)."""
        await self.relayed_events.delete_for_user(matrix_user_id)
        await self.action_journal.delete_for_user(matrix_user_id)


def _rowcount(result: Any) -> int:
    count = result.rowcount
    assert isinstance(count, int)
    return count
