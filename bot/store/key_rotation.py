"""Opening the key ring at start-up, and key rotation.

Rotation order, chosen so that a crash at any point leaves a key file that decrypts the database:

1. write the key file with the new current key *and* the old keys (atomic rename);
2. re-encrypt every secret under the new key in one database transaction and commit.

A crash before 2 commits leaves old ciphertexts, which the old keys in the new file still decrypt; after
it, new ciphertexts. Old keys stay in the file until `retire_old_keys`, which first checks that every
secret decrypts with the current key alone. Run both with the bot stopped: a running bot would keep
encrypting with the key it loaded.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import DecryptionError, KeyRingError
from bot.store.db import create_engine, session_factory
from bot.store.encrypted_columns import all_readable_with, reencrypt_all, sample_sealed
from bot.store.keyring import KeyRing
from bot.store.migrate import upgrade

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["open_keyring", "retire_old_keys", "rotate_keys"]

log = logging.getLogger(__name__)


async def open_keyring(key_file: Path, sessions: async_sessionmaker[AsyncSession]) -> KeyRing:
    """Load the key file, creating one only for a database that holds no encrypted data yet.

    Raises KeyRingError if the file is missing while secrets exist, is malformed, or cannot decrypt
    a stored secret. Expects the schema to be migrated.
    """
    async with sessions() as session:
        sample = await sample_sealed(session)

    if not await asyncio.to_thread(key_file.exists):
        if sample is not None:
            raise KeyRingError(
                f"key file {key_file} is missing but the database holds encrypted secrets; restore the "
                "key file from backup (a new key could not decrypt them)"
            )
        ring = await asyncio.to_thread(KeyRing.generate_file, key_file)
        log.warning(
            "created a new encryption key file at %s; back it up: without it the stored tokens "
            "cannot be decrypted",
            key_file,
        )
        return ring

    ring = await asyncio.to_thread(KeyRing.load, key_file)
    if sample is not None:
        ciphertext, aad = sample
        try:
            ring.decrypt(ciphertext, aad)
        except DecryptionError as exc:
            raise KeyRingError(
                f"key file {key_file} cannot decrypt the secrets stored in the database ({exc}); "
                "is it the key file that belongs to this database?"
            ) from None
    return ring


async def rotate_keys(config: Config) -> int:
    """Add a new current key and re-encrypt every stored secret with it; returns how many."""
    key_file = config.encryption.key_file
    old = await asyncio.to_thread(KeyRing.load, key_file)
    new = old.with_new_current_key()
    engine = create_engine(config.database.url)
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            # Check before touching the file: a key file that does not fit this database stays as it is.
            try:
                await all_readable_with(session, old)
            except DecryptionError as exc:
                raise KeyRingError(
                    f"key file {key_file} cannot decrypt every stored secret ({exc})"
                ) from None
            await asyncio.to_thread(new.save, key_file)
            count = await reencrypt_all(session, new)
    finally:
        await engine.dispose()
    log.info("re-encrypted %d secrets under the new key %s", count, new.current_key_id)
    return count


async def retire_old_keys(config: Config) -> int:
    """Drop every key but the current one, after checking each stored secret decrypts without them.

    Returns how many keys were dropped. Backups of the database from before the last rotation need the
    previous key file.
    """
    key_file = config.encryption.key_file
    ring = await asyncio.to_thread(KeyRing.load, key_file)
    slim = ring.only_current()
    dropped = len(ring.key_ids) - len(slim.key_ids)
    if dropped == 0:
        return 0
    engine = create_engine(config.database.url)
    try:
        await upgrade(engine)
        async with session_factory(engine)() as session:
            try:
                await all_readable_with(session, slim)
            except DecryptionError as exc:
                raise KeyRingError(
                    f"some stored secrets still need an old key ({exc}); run the key rotation first"
                ) from None
    finally:
        await engine.dispose()
    await asyncio.to_thread(slim.save, key_file)
    return dropped
