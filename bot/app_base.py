"""What every role of `gts-bot run` opens first, and the roles themselves (see `bot.app`).

`open_base` opens, into the caller's exit stack: the private data directory, metrics (labelled with the
worker name in a split deployment), the migrated database, the key ring (registered with the log redactor)
and the fediverse client and stream connector.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Config
from bot.errors import ConfigError, KeyRingError
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import Resolver
from bot.fediverse.ratelimit import PacerRegistry
from bot.fediverse.resolver import SystemResolver
from bot.fediverse.streaming import StreamConnector, build_stream_connector
from bot.log import installed_redactor
from bot.observability import DatabaseCheck, HealthCheck, HealthServer, Metrics, sqlalchemy_ping
from bot.resources import open_database, open_fediverse_client
from bot.store.key_rotation import open_keyring
from bot.store.keyring import KeyRing
from bot.store.pg_notify import Listener
from bot.store.private_files import ensure_private_dir

__all__ = [
    "WORKER_ID_MAX",
    "Base",
    "Role",
    "cancel_task",
    "default_worker_id",
    "open_base",
    "require_postgres",
    "start_health",
    "start_listener",
]


class Role(enum.StrEnum):
    """What one `gts-bot run` process does (`--role`)."""

    ALL = "all"  # everything, in one process (the default)
    MATRIX = "matrix"  # Matrix: sync, commands, E2EE, sending from the outbox; relays nothing itself
    RELAY = "relay"  # a relay worker: streams the accounts it holds leases on, writes the outbox


def require_postgres(config: Config, role: Role) -> None:
    """Roles other than `all` coordinate through PostgreSQL (row locks, LISTEN/NOTIFY); refuse SQLite."""
    if role is not Role.ALL and make_url(config.database.url).get_backend_name() != "postgresql":
        raise ConfigError(
            [
                f"database.url: `run --role {role.value}` needs PostgreSQL (several processes share it); "
                "SQLite serves only the single-process `run` (--role all)"
            ]
        )


WORKER_ID_MAX = 64  # models.RelayWorker.id


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}"


def _version() -> str:
    try:
        return version("gts-bot")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class Base:
    """What every role opens first."""

    metrics: Metrics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    client: FediverseClient
    connector: StreamConnector


async def open_base(
    stack: AsyncExitStack,
    config: Config,
    resolver: Resolver | None,
    worker: str | None,
    *,
    may_create_key: bool = True,
) -> Base:
    # Only the bot's user may look inside: the database, key file and E2EE store live here.
    await asyncio.to_thread(ensure_private_dir, config.data_dir)
    metrics = Metrics(_version(), worker=worker)
    database = await stack.enter_async_context(open_database(config.database.url))
    if not may_create_key and not await asyncio.to_thread(config.encryption.key_file.exists):
        # Two processes must never each create a key: the Matrix process makes it, the workers share it.
        raise KeyRingError(
            f"key file {config.encryption.key_file} is missing: a relay worker only reads the key file the "
            "Matrix process (`run --role matrix`) creates; start that first, or copy the file here"
        )
    keyring = await open_keyring(config.encryption.key_file, database.sessions)
    redactor = installed_redactor()
    if redactor is not None:
        redactor.add_secret(keyring.e2ee_store_key())
        # Every token and client secret, as it passes (token-shaped ones only; dropped on revoke).
        keyring.on_secret(redactor.add_remote_secret)
        keyring.on_forget(redactor.forget_secret)
    if resolver is None:  # one lookup pool for REST calls and stream handshakes, stopped on exit
        system_resolver = SystemResolver()
        stack.callback(system_resolver.close)
        resolver = system_resolver
    pacers = PacerRegistry()  # one budget per instance, shared by REST calls and stream handshakes
    client = await stack.enter_async_context(
        open_fediverse_client(
            config.fediverse, resolver, pacers=pacers, on_response=metrics.instance_request
        )
    )
    connector = build_stream_connector(config.fediverse, resolver, pacers=pacers)
    return Base(metrics, database.engine, database.sessions, keyring, client, connector)


async def start_health(
    stack: AsyncExitStack, config: Config, base: Base, *checks: HealthCheck
) -> HealthServer | None:
    """Serve /healthz and /metrics when enabled: healthy while the database answers and every check passes."""
    if not config.observability.enabled:
        return None
    observability = config.observability
    health = HealthServer(
        observability.host,
        observability.port,
        base.metrics,
        [*checks, DatabaseCheck(sqlalchemy_ping(base.engine))],
    )
    await health.start()
    stack.push_async_callback(health.stop)
    return health


def start_listener(
    stack: AsyncExitStack, config: Config, channels: list[str], on_notify: Callable[[str, str | None], None]
) -> Listener:
    listener = Listener(make_url(config.database.url), channels, on_notify)
    listener.start()
    stack.push_async_callback(listener.aclose)
    return listener


async def cancel_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
