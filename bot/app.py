"""The composition root: builds config-driven pieces once, wires them, owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.accounts import AccountsService
from bot.commands.handlers import BotCommands
from bot.commands.throttle import InstanceShare, UserThrottle
from bot.config import Config
from bot.connect import ConnectFlows
from bot.dm_registry import DmDirectory
from bot.errors import ConfigError, KeyRingError
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import Resolver
from bot.fediverse.ratelimit import PacerRegistry
from bot.fediverse.streaming import StreamConnector, build_stream_connector
from bot.log import installed_redactor
from bot.matrix.adapter import MatrixAdapter
from bot.matrix.session import Credentials
from bot.matrix.types import RoomId, TrustPolicy, UserId
from bot.observability import DatabaseCheck, HealthServer, Metrics, SyncFreshnessCheck, sqlalchemy_ping
from bot.relay.lease_keeper import LeaseKeeper, LeaseTiming
from bot.relay.manager import RelayManager
from bot.relay.notices import OutboxNotices
from bot.relay.outbox_feed import OutboxFeed
from bot.relay.tuning import RelayTuning
from bot.resources import open_database, open_fediverse_client
from bot.router import Router
from bot.store.key_rotation import open_keyring
from bot.store.keyring import KeyRing
from bot.store.pg_notify import ACCOUNTS_CHANNEL, OUTBOX_CHANNEL, Listener, notify
from bot.store.private_files import ensure_private_dir
from bot.store.records import AccountId, utc_now
from bot.store.repositories import AppsRepository, FlowsRepository, HandledEventsRepository
from bot.store.session_store import DatabaseHandledEvents, DatabaseSessionStore
from bot.store.stats import store_counts

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 60.0
HANDLED_EVENTS_KEPT = timedelta(days=7)
UNUSED_APPS_KEPT = timedelta(days=1)


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
class Bot:
    """The running pieces, exposed for tests and the demo."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    matrix: MatrixAdapter
    relay: RelayManager
    router: Router
    metrics: Metrics
    dms: DmDirectory
    health: HealthServer | None


@dataclass
class _Base:
    """What every role opens first."""

    metrics: Metrics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    client: FediverseClient
    connector: StreamConnector


async def _open_base(
    stack: AsyncExitStack,
    config: Config,
    resolver: Resolver | None,
    worker: str | None,
    *,
    may_create_key: bool = True,
) -> _Base:
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
    client = await stack.enter_async_context(
        open_fediverse_client(
            config.fediverse, resolver, pacers=PacerRegistry(), on_response=metrics.instance_request
        )
    )
    connector = build_stream_connector(config.fediverse, resolver)
    return _Base(metrics, database.engine, database.sessions, keyring, client, connector)


async def _start_health(stack: AsyncExitStack, config: Config, health: HealthServer) -> HealthServer | None:
    if not config.observability.enabled:
        return None
    await health.start()
    stack.push_async_callback(health.stop)
    return health


def _start_listener(
    stack: AsyncExitStack, config: Config, channels: list[str], on_notify: Callable[[str, str | None], None]
) -> Listener:
    listener = Listener(make_url(config.database.url), channels, on_notify)
    listener.start()
    stack.push_async_callback(listener.aclose)
    return listener


@asynccontextmanager
async def running_bot(
    config: Config, *, resolver: Resolver | None = None, role: Role = Role.ALL
) -> AsyncIterator[Bot]:
    """Start everything; on exit stop it in reverse order (relay, Matrix, HTTP, database).

    `role` MATRIX: relay no account here; send what relay workers write to the outbox (woken by their
    NOTIFY, polling slowly as a safety net), and announce connected/changed/revoked accounts to them."""
    require_postgres(config, role)
    async with AsyncExitStack() as stack:
        base = await _open_base(stack, config, resolver, "matrix" if role is Role.MATRIX else None)
        metrics, engine, sessions, keyring = base.metrics, base.engine, base.sessions, base.keyring
        client, connector = base.client, base.connector

        matrix = MatrixAdapter(
            Credentials(
                homeserver=config.matrix.homeserver,
                user_id=UserId(config.matrix.user_id),
                store_dir=config.data_dir / "nio-store",
                pickle_key=keyring.e2ee_store_key(),
                password=config.matrix.password,
                access_token=config.matrix.access_token,
                device_name=config.matrix.device_name,
            ),
            DatabaseSessionStore(sessions, keyring),
            trust_policy=TrustPolicy(config.matrix.trust_policy),
        )
        matrix.on_sent(metrics.matrix_send)
        matrix.on_rate_limit(lambda state: metrics.matrix_send(rate_limited=True) if state.blocked else None)
        await matrix.start()
        stack.push_async_callback(matrix.stop)
        dms = DmDirectory(sessions, matrix)

        async def notify_user(user_id: str, plain: str, html: str) -> None:
            room = await dms.ensure(user_id)
            await matrix.send_notice(RoomId(room), plain, html)

        async def accounts_elsewhere(account_id: AccountId) -> None:
            async with sessions() as session, session.begin():
                await notify(session, ACCOUNTS_CHANNEL, str(account_id))

        relay = RelayManager(
            sessions=sessions,
            keyring=keyring,
            client=client,
            connector=connector,
            sender=matrix,
            accounts_elsewhere=accounts_elsewhere if role is Role.MATRIX else None,
            relay_config=config.relay,
            allow_http=config.fediverse.allow_http,
            command_prefix=config.matrix.command_prefix,
            notify_user=notify_user,
            metrics=metrics,
            room_check=dms.still_private,
            tuning=RelayTuning(max_message_bytes=config.limits.max_message_bytes),
        )
        dms.on_recorded(relay.dm_room_changed)
        flows = ConnectFlows(
            sessions=sessions,
            keyring=keyring,
            client=client,
            fediverse=config.fediverse,
            limits=config.limits,
            flow_ttl=timedelta(seconds=config.relay.flow_ttl_seconds),
            on_connected=relay.restart_account,
            share=InstanceShare(time.monotonic),
        )
        accounts = AccountsService(
            sessions=sessions,
            keyring=keyring,
            client=client,
            relay=relay,
            allow_http=config.fediverse.allow_http,
        )
        router = Router(
            matrix=matrix,
            dms=dms,
            commands=BotCommands(flows=flows, accounts=accounts, clock=utc_now),
            flows=flows,
            handled=DatabaseHandledEvents(sessions),
            config=config.matrix,
            throttle=UserThrottle(config.limits.commands_per_minute, time.monotonic),
            relay=relay,
            bot_user_id=config.matrix.user_id,
            clock=time.monotonic,
        )
        dms.on_lost(router.dm_lost)
        await relay.start()
        stack.push_async_callback(relay.stop)
        if role is Role.MATRIX:
            feed = OutboxFeed(sessions, relay.take_outbox)
            _start_listener(stack, config, [OUTBOX_CHANNEL], lambda _channel, _payload: feed.wake())
            feeding = asyncio.create_task(feed.run(), name="outbox-feed")
            stack.push_async_callback(_cancel, feeding)
        stack.push_async_callback(flows.settle)  # a token a cancelled command got is stored or revoked
        stack.push_async_callback(accounts.settle)  # a revoke a cancelled command started completes
        stack.push_async_callback(router.aclose)  # commands in flight finish before the relay stops

        sync_check = SyncFreshnessCheck()
        matrix.on_sync(sync_check.mark_synced)
        health = await _start_health(
            stack,
            config,
            HealthServer(
                config.observability.host,
                config.observability.port,
                metrics,
                [sync_check, DatabaseCheck(sqlalchemy_ping(engine))],
            ),
        )

        housekeeping = asyncio.create_task(_housekeeping(sessions, keyring, metrics), name="housekeeping")
        stack.callback(housekeeping.cancel)
        yield Bot(engine, sessions, keyring, matrix, relay, router, metrics, dms, health)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@dataclass
class RelayWorker:
    """A running `run --role relay` process, exposed for tests."""

    sessions: async_sessionmaker[AsyncSession]
    relay: RelayManager
    leases: LeaseKeeper
    metrics: Metrics
    health: HealthServer | None


@asynccontextmanager
async def running_relay_worker(
    config: Config,
    *,
    worker_id: str | None = None,
    resolver: Resolver | None = None,
    timing: LeaseTiming | None = None,
) -> AsyncIterator[RelayWorker]:
    """A relay worker: claim account leases, relay those accounts into the outbox; on exit release them.

    It never talks to Matrix: a user notice (an account stopped working) goes through the outbox too."""
    require_postgres(config, Role.RELAY)
    worker_id = worker_id or default_worker_id()
    if not 0 < len(worker_id) <= WORKER_ID_MAX:
        raise ConfigError([f"--worker-id: 1 to {WORKER_ID_MAX} characters, not {len(worker_id)}"])
    async with AsyncExitStack() as stack:
        base = await _open_base(stack, config, resolver, worker_id, may_create_key=False)
        sessions = base.sessions
        holder: list[LeaseKeeper] = []  # the manager's guard and the keeper's callbacks refer to each other

        async def write_guard(session: AsyncSession, account_ids: Collection[AccountId]) -> None:
            await holder[0].write_guard(session, account_ids)

        relay = RelayManager(
            sessions=sessions,
            keyring=base.keyring,
            client=base.client,
            connector=base.connector,
            sender=None,
            relay_config=config.relay,
            allow_http=config.fediverse.allow_http,
            command_prefix=config.matrix.command_prefix,
            notify_user=OutboxNotices(sessions),
            metrics=base.metrics,
            tuning=RelayTuning(max_message_bytes=config.limits.max_message_bytes),
            write_guard=write_guard,
        )
        keeper = LeaseKeeper(
            sessions,
            worker_id,
            on_claimed=relay.restart_account,
            on_lost=relay.remove_account,
            timing=timing,
        )
        holder.append(keeper)
        await relay.start()
        stack.push_async_callback(keeper.retire)  # after the relay stopped: nothing more is written
        stack.push_async_callback(relay.stop)
        changes: set[asyncio.Task[None]] = set()

        def accounts_changed(_channel: str, payload: str | None) -> None:
            if payload is None or not payload.isdigit():
                keeper.wake()
                return
            task = asyncio.create_task(keeper.account_changed(AccountId(int(payload))))
            changes.add(task)
            task.add_done_callback(changes.discard)

        _start_listener(stack, config, [ACCOUNTS_CHANNEL], accounts_changed)
        await keeper.round()
        keeping = asyncio.create_task(keeper.run(), name="lease-keeper")
        stack.push_async_callback(_cancel, keeping)
        health = await _start_health(
            stack,
            config,
            HealthServer(
                config.observability.host,
                config.observability.port,
                base.metrics,
                [DatabaseCheck(sqlalchemy_ping(base.engine))],
            ),
        )
        log.info("relay worker %s is running", worker_id)
        yield RelayWorker(sessions, relay, keeper, base.metrics, health)


async def _housekeeping(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, metrics: Metrics
) -> None:
    while True:
        try:
            async with sessions() as session, session.begin():
                now = utc_now()
                await FlowsRepository(session).delete_expired(now)
                await AppsRepository(session, keyring).delete_unused(now - UNUSED_APPS_KEPT)
                await HandledEventsRepository(session).prune(now - HANDLED_EVENTS_KEPT)
                counts = await store_counts(session)
            metrics.set_connected_accounts(counts.accounts)
            metrics.set_pending_flows(counts.pending_flows)
        except Exception:
            log.exception("housekeeping failed; trying again later")
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


async def serve(
    config: Config,
    stop: asyncio.Event,
    *,
    resolver: Resolver | None = None,
    role: Role = Role.ALL,
    worker_id: str | None = None,
) -> None:
    """Run the bot (or one role of it) until `stop` is set or the sync loop fails."""
    if role is Role.RELAY:
        async with running_relay_worker(config, resolver=resolver, worker_id=worker_id):
            await stop.wait()
        log.info("gts-bot relay worker stopped")
        return
    async with running_bot(config, resolver=resolver, role=role) as bot:
        sync = asyncio.create_task(bot.matrix.run(bot.router.handle), name="matrix-sync")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        log.info("gts-bot is running as %s", config.matrix.user_id)
        done, _ = await asyncio.wait({sync, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if sync in done:
            sync.result()  # re-raise why syncing stopped
        else:
            await bot.matrix.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
    log.info("gts-bot stopped")


async def _main(config: Config, role: Role, worker_id: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop, role=role, worker_id=worker_id)
    return 0


def run(config: Config, role: Role = Role.ALL, worker_id: str | None = None) -> int:
    """`gts-bot run`: the process exits with the returned code."""
    require_postgres(config, role)
    return asyncio.run(_main(config, role, worker_id))


__all__ = [
    "Bot",
    "RelayWorker",
    "Role",
    "require_postgres",
    "run",
    "running_bot",
    "running_relay_worker",
    "serve",
]
