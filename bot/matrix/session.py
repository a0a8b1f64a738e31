"""Getting a logged-in nio client: restore the stored session, or log in once and store it.

Order of preference on every start:
1. the session in the SessionStore (same user id, E2EE store file present): restore it, no new login;
   if the server rejects its token (M_UNKNOWN_TOKEN) and a password is configured, log in again;
2. a configured access token: ask the server which device it belongs to and store that;
3. the configured password: log in once (a new device) and store the result.
Each new login creates a new device, with new E2EE keys, and counts against Synapse's login rate limit
(5 per account, then one every ~5.5 minutes): restoring is the normal path.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.matrix.errors import MatrixError, MatrixLoginError, MatrixStoreError, MatrixUnknownToken
from bot.matrix.nio_client import call, make_client, store_file
from bot.matrix.sender import RateLimitTracker, retry_rate_limited
from bot.matrix.types import DeviceId, SessionStore, StoredSession, UserId
from bot.store.private_files import ensure_private_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Who the bot is and where its E2EE store lives (`<data_dir>/nio-store`).

    `pickle_key` encrypts the device's private keys in the nio store. It must come from the bot's own key
    material and stay the same across key-ring rotations (e.g. a random key kept encrypted in the database,
    or one derived from a key that is never retired): a different pickle key makes the store unreadable.
    """

    homeserver: str
    user_id: UserId
    store_dir: Path
    pickle_key: str = field(repr=False)
    password: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    device_name: str = "gts-bot"

    def __post_init__(self) -> None:
        if not self.pickle_key or self.pickle_key == "DEFAULT_KEY":
            raise ValueError(
                "Credentials.pickle_key must be the bot's own secret, not empty or nio's default"
            )


@dataclass
class Session:
    """A logged-in client, its device, and the sync token to resume from (None: never synced)."""

    client: Any
    device_id: DeviceId
    sync_token: str | None
    logins: int = 0  # password logins this start needed (0 when the session was restored)


class SessionManager:
    def __init__(self, creds: Credentials, store: SessionStore) -> None:
        self._creds = creds
        self._store = store
        self._login_limits = RateLimitTracker()

    def _new_client(self) -> Any:
        c = self._creds
        return make_client(c.homeserver, c.user_id, c.store_dir, c.pickle_key)

    async def open(self) -> Session:
        """Restore or create the bot's session (see the module docstring)."""
        c = self._creds
        await asyncio.to_thread(ensure_private_dir, c.store_dir)  # device keys live here
        stored = await self._store.load()
        if stored is not None and stored.user_id != c.user_id:
            log.warning("stored Matrix session is for %s, not %s: ignoring it", stored.user_id, c.user_id)
            stored = None
        if stored is not None:
            restored = await self._restore(stored)
            if restored is not None:
                return restored
            sync_token = stored.sync_token
        else:
            sync_token = None
        if c.access_token is not None and stored is None:
            return await self._adopt_token(c.access_token)
        session = await self.login()
        session.sync_token = sync_token
        return session

    async def _restore(self, stored: StoredSession) -> Session | None:
        c = self._creds
        has_store = await asyncio.to_thread(store_file(c.store_dir, stored.user_id, stored.device_id).exists)
        if not has_store:
            if c.password is None:
                raise MatrixStoreError(
                    f"the E2EE store for device {stored.device_id} is missing from {c.store_dir} and no "
                    "password is configured to log in as a new device"
                )
            log.warning("E2EE store for device %s is missing: logging in as a new device", stored.device_id)
            return None
        client = self._new_client()
        self._load(client, stored.user_id, stored.device_id, stored.access_token)
        try:
            await call("whoami", client.whoami())
        except MatrixUnknownToken:
            await client.close()
            if c.password is None:
                raise MatrixLoginError(
                    "the stored Matrix access token was rejected and no password is configured"
                ) from None
            log.warning("stored access token for device %s was rejected: logging in again", stored.device_id)
            return None
        except BaseException:
            await client.close()
            raise
        log.info("restored Matrix session for %s (device %s)", stored.user_id, stored.device_id)
        return Session(client, stored.device_id, stored.sync_token)

    async def _adopt_token(self, token: str) -> Session:
        c = self._creds
        client = self._new_client()
        client.access_token = token
        try:
            who = await call("whoami", client.whoami())
        except BaseException:
            await client.close()
            raise
        user_id: str = who.user_id
        device_id: str | None = who.device_id
        if user_id != c.user_id or not device_id:
            await client.close()
            raise MatrixLoginError(f"the configured access token does not belong to a device of {c.user_id}")
        self._load(client, c.user_id, DeviceId(device_id), token)
        await self._store.save(c.user_id, DeviceId(device_id), token)
        return Session(client, DeviceId(device_id), None)

    async def login(self) -> Session:
        """Log in with the password (a new device) and store the session."""
        c = self._creds
        if c.password is None:
            raise MatrixLoginError(f"no stored session and no password configured for {c.user_id}")
        password = c.password
        client = self._new_client()
        try:
            resp = await retry_rate_limited(
                lambda: call("login", client.login(password=password, device_name=c.device_name)),
                self._login_limits,
            )
        except MatrixError as e:
            await client.close()
            raise MatrixLoginError(f"the homeserver refused the login of {c.user_id}: {e}") from e
        user_id: str = resp.user_id
        device_id = DeviceId(resp.device_id)
        token: str = resp.access_token
        if user_id != c.user_id:
            await client.close()
            raise MatrixLoginError(f"logged in as {user_id}, but the configuration says {c.user_id}")
        await self._store.save(c.user_id, device_id, token)
        log.info("logged in as %s (new device %s)", user_id, device_id)
        return Session(client, device_id, None, logins=1)

    @staticmethod
    def _load(client: Any, user_id: str, device_id: DeviceId, token: str) -> None:
        try:
            client.restore_login(user_id, device_id, token)
        except Exception as e:
            # A wrong pickle key (key ring changed) or a corrupt store ends up here.
            raise MatrixStoreError(
                f"cannot open the E2EE store for device {device_id}: {type(e).__name__}"
            ) from e
