"""Every encrypted column, with the associated data that binds its ciphertext to its row and purpose.

This is the one list rotation and key checks walk; a test fails if a model grows an ``*_encrypted``
column that is not listed here. The associated data uses each row's natural key (not the surrogate id,
which is unknown before insert), so a ciphertext copied to another row or column does not decrypt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.action_journal import action_text_aad
from bot.store.keyring import KeyRing, aad_for
from bot.store.models import (
    Account,
    ActionJournalEntry,
    Base,
    FediverseApp,
    MatrixSession,
    OutboxMessage,
    PendingFlow,
)
from bot.store.outbox import outbox_message_aad

__all__ = [
    "SEALED_COLUMNS",
    "SealedColumn",
    "account_token_aad",
    "all_readable_with",
    "app_secret_aad",
    "count_sealed",
    "matrix_token_aad",
    "pkce_verifier_aad",
    "reencrypt_all",
    "sample_sealed",
]


def app_secret_aad(instance: str, scopes: str, client_id: str) -> bytes:
    return aad_for("app-secret", instance, scopes, client_id)


def account_token_aad(matrix_user_id: str, instance: str, fediverse_account_id: str) -> bytes:
    return aad_for("account-token", matrix_user_id, instance, fediverse_account_id)


def pkce_verifier_aad(oauth_state: str) -> bytes:
    return aad_for("pkce-verifier", oauth_state)


def matrix_token_aad(user_id: str, device_id: str) -> bytes:
    return aad_for("matrix-access-token", user_id, device_id)


@dataclass(frozen=True)
class SealedColumn:
    model: type[Base]
    attribute: str
    aad: Callable[[Any], bytes]

    def rows(self) -> Select[Any]:
        """The rows that hold a value in this column (an optional column may be empty)."""
        return select(self.model).where(getattr(self.model, self.attribute).is_not(None))

    def ciphertext(self, row: Any) -> str:
        value = getattr(row, self.attribute)
        assert isinstance(value, str)
        return value


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(
        FediverseApp,
        "client_secret_encrypted",
        lambda row: app_secret_aad(row.instance, row.scopes, row.client_id),
    ),
    SealedColumn(
        Account,
        "token_encrypted",
        lambda row: account_token_aad(row.matrix_user_id, row.instance, row.fediverse_account_id),
    ),
    SealedColumn(PendingFlow, "pkce_verifier_encrypted", lambda row: pkce_verifier_aad(row.oauth_state)),
    SealedColumn(
        MatrixSession,
        "access_token_encrypted",
        lambda row: matrix_token_aad(row.user_id, row.device_id),
    ),
    SealedColumn(
        ActionJournalEntry,
        "text_encrypted",
        lambda row: action_text_aad(row.event_id, row.matrix_user_id),
    ),
    SealedColumn(
        OutboxMessage,
        "message_encrypted",
        lambda row: outbox_message_aad(row.txn_id, row.matrix_user_id),
    ),
)


async def count_sealed(session: AsyncSession) -> int:
    """How many encrypted values the database holds."""
    total = 0
    for column in SEALED_COLUMNS:
        counted = select(func.count()).select_from(column.rows().subquery())
        total += (await session.execute(counted)).scalar_one()
    return total


async def sample_sealed(session: AsyncSession) -> tuple[str, bytes] | None:
    """One stored (ciphertext, associated data) pair, or None if there is no encrypted data."""
    for column in SEALED_COLUMNS:
        row = (await session.execute(column.rows().limit(1))).scalars().first()
        if row is not None:
            return column.ciphertext(row), column.aad(row)
    return None


async def reencrypt_all(session: AsyncSession, ring: KeyRing) -> int:
    """Decrypt every stored secret with `ring` and encrypt it again with its current key. Flushes, never
    commits. Raises DecryptionError if any value does not decrypt."""
    count = 0
    for column in SEALED_COLUMNS:
        for row in (await session.execute(column.rows())).scalars():
            aad = column.aad(row)
            setattr(row, column.attribute, ring.encrypt(ring.decrypt(column.ciphertext(row), aad), aad))
            count += 1
    await session.flush()
    return count


async def all_readable_with(session: AsyncSession, ring: KeyRing) -> int:
    """Decrypt every stored secret with `ring` (raising DecryptionError on the first failure); the count."""
    count = 0
    for column in SEALED_COLUMNS:
        for row in (await session.execute(column.rows())).scalars():
            ring.decrypt(column.ciphertext(row), column.aad(row))
            count += 1
    return count
