"""The values repositories return: frozen dataclasses, secrets left out of ``repr``; NewType ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NewType

from bot.store.models import AccountState

__all__ = [
    "AccountId",
    "AccountRecord",
    "AccountState",
    "AppId",
    "AppRecord",
    "Clock",
    "FlowId",
    "FlowRecord",
    "MatrixSessionRecord",
    "affected_rows",
    "utc_now",
    "words",
]

AppId = NewType("AppId", int)
AccountId = NewType("AccountId", int)
FlowId = NewType("FlowId", int)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def affected_rows(result: object) -> int:
    """How many rows an UPDATE or DELETE result touched (0 when the driver does not say)."""
    count = getattr(result, "rowcount", 0)
    return count if isinstance(count, int) else 0


def words(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value.split())


@dataclass(frozen=True)
class AppRecord:
    id: AppId
    instance: str
    scopes: str
    client_id: str
    client_secret: str = field(repr=False)
    created_at: datetime


@dataclass(frozen=True)
class AccountRecord:
    id: AccountId
    matrix_user_id: str
    instance: str
    app_id: AppId
    fediverse_account_id: str
    acct: str
    token: str = field(repr=False)
    scopes: str
    cursor: str | None
    state: AccountState
    notify_types: tuple[str, ...] | None  # None means every type
    created_at: datetime
    updated_at: datetime
    software: str | None = None  # the server's, as probed at connect (None: unknown)


@dataclass(frozen=True)
class FlowRecord:
    id: FlowId
    matrix_user_id: str
    instance: str
    app_id: AppId
    scopes: str
    software: str | None  # as probed when the flow started (None: unknown)
    oauth_state: str = field(repr=False)
    pkce_verifier: str = field(repr=False)
    dm_room_id: str
    created_at: datetime
    expires_at: datetime
    upgrades: AccountId | None = None
    """The stored account this flow gives new scopes to (`allow-actions`); None for a plain connect."""

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class MatrixSessionRecord:
    user_id: str
    device_id: str
    access_token: str = field(repr=False)
    sync_token: str | None
    updated_at: datetime
