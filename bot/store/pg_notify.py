"""PostgreSQL LISTEN/NOTIFY: how the processes of a split deployment wake each other.

Channels: `OUTBOX_CHANNEL` (a relay worker wrote outbox rows; the Matrix process sends them) and
`ACCOUNTS_CHANNEL` (the Matrix process connected, changed or revoked an account, payload its id; relay
workers look again). `notify` runs inside the caller's transaction, so the wake-up is delivered only when
what it announces is committed. `Listener` keeps one connection of its own LISTENing, reconnecting after a
loss; after every (re)connect it calls back with payload None, since notifications sent while it was not
listening are gone. Payloads are ids, never secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["ACCOUNTS_CHANNEL", "OUTBOX_CHANNEL", "Listener", "notify"]

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "gts_outbox"
ACCOUNTS_CHANNEL = "gts_accounts"

OnNotify = Callable[[str, str | None], None]  # (channel, payload; None after a (re)connect)


async def notify(session: AsyncSession, channel: str, payload: str = "") -> None:
    """NOTIFY `channel`; delivered when the session's transaction commits (never if it rolls back)."""
    stmt = text("SELECT pg_notify(:channel, :payload)")
    await session.execute(stmt, {"channel": channel, "payload": payload})


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """LISTEN on `channels` over a connection of its own, until `aclose()`."""

    def __init__(
        self,
        url: URL,
        channels: Sequence[str],
        on_notify: OnNotify,
        *,
        retry_seconds: float = 5.0,
        connect: Callable[[str], Awaitable[Any]] = asyncpg.connect,
    ) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._retry = retry_seconds
        self._connect = connect
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while a connection is LISTENing

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listen")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _deliver(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        self._on_notify(channel, payload)

    async def _run(self) -> None:
        # Any failure (a refused connect, a connection closed under `add_listener` raising InterfaceError,
        # …) ends only this connection: the task itself must live as long as the process.
        while True:
            try:
                connection = await self._connect(_dsn(self._url))
            except Exception as error:
                log.warning(
                    "cannot LISTEN on the database (%s); trying again in %.0f s",
                    type(error).__name__,
                    self._retry,
                )
                await asyncio.sleep(self._retry)
                continue
            try:
                await self._listen(connection)
                log.warning("the LISTEN connection to the database was lost; reconnecting")
            except Exception as error:
                log.warning("LISTEN failed (%s); reconnecting in %.0f s", type(error).__name__, self._retry)
                await asyncio.sleep(self._retry)
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(connection.close(timeout=5))

    async def _listen(self, connection: Any) -> None:
        """LISTEN until the connection is lost."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        for channel in self._channels:
            await connection.add_listener(channel, self._deliver)
        self.listening.set()
        for channel in self._channels:
            self._on_notify(channel, None)
        await lost.wait()
