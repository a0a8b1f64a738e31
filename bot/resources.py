"""Builders shared by the composition root (`bot.app`) and the operator commands (`bot.admin`).

Each is an async context manager that owns what it opens: the database (engine migrated to head, with
its session factory) and the fediverse client (over the guarded HTTP stack). The key ring comes from
`bot.store.key_rotation.open_keyring`, which needs the migrated database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import FediverseConfig
from bot.fediverse._http import ResponseObserver
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import Resolver, build_http_client
from bot.fediverse.ratelimit import PacerRegistry
from bot.store.db import create_engine, session_factory
from bot.store.migrate import upgrade

__all__ = ["Database", "open_database", "open_fediverse_client"]


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@asynccontextmanager
async def open_database(url: str) -> AsyncIterator[Database]:
    """The database at `url`, upgraded to the newest schema; disposed of on exit.

    Raises DatabaseVersionError (changing nothing) for a database written by a newer gts-bot.
    """
    engine = create_engine(url)
    try:
        await upgrade(engine)
        yield Database(engine, session_factory(engine))
    finally:
        await engine.dispose()


@asynccontextmanager
async def open_fediverse_client(
    settings: FediverseConfig,
    resolver: Resolver | None = None,
    *,
    pacers: PacerRegistry | None = None,
    on_response: ResponseObserver | None = None,
) -> AsyncIterator[FediverseClient]:
    """A FediverseClient over the guarded HTTP stack; its connections are closed on exit."""
    http = build_http_client(settings, resolver)
    try:
        yield FediverseClient.from_settings(http, settings, pacers=pacers, on_response=on_response)
    finally:
        await http.aclose()
