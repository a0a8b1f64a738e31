"""The composition root: builds config-driven pieces once, wires them, owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.accounts import AccountsService
from bot.commands.handlers import BotCommands
from bot.commands.throttle import InstanceShare, UserThrottle
from bot.config import Config
from bot.connect import ConnectFlows
from bot.dm_registry import DmDirectory
from bot.fediverse.guard import Resolver
from bot.fediverse.ratelimit import PacerRegistry
from bot.fediverse.streaming import build_stream_connector
from bot.log import installed_redactor
from bot.matrix.adapter import MatrixAdapter
from bot.matrix.session import Credentials
from bot.matrix.types import RoomId, TrustPolicy, UserId
from bot.observability import DatabaseCheck, HealthServer, Metrics, SyncFreshnessCheck, sqlalchemy_ping
from bot.relay.heap import freeze_long_lived
from bot.relay.manager import RelayManager
from bot.relay.tuning import RelayTuning
from bot.resources import open_database, open_fediverse_client
from bot.router import Router
from bot.store.key_rotation import open_keyring
from bot.store.keyring import KeyRing
from bot.store.private_files import ensure_private_dir
from bot.store.records import utc_now
from bot.store.repositories import AppsRepository, FlowsRepository, HandledEventsRepository
from bot.store.session_store import DatabaseHandledEvents, DatabaseSessionStore
from bot.store.stats import store_counts

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 60.0
HANDLED_EVENTS_KEPT = timedelta(days=7)
UNUSED_APPS_KEPT = timedelta(days=1)


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


@asynccontextmanager
async def running_bot(config: Config, *, resolver: Resolver | None = None) -> AsyncIterator[Bot]:
    """Start everything; on exit stop it in reverse order (relay, Matrix, HTTP, database)."""
    async with AsyncExitStack() as stack:
        # Only the bot's user may look inside: the database, key file and E2EE store live here.
        await asyncio.to_thread(ensure_private_dir, config.data_dir)
        metrics = Metrics(_version())
        database = await stack.enter_async_context(open_database(config.database.url))
        engine, sessions = database.engine, database.sessions
        keyring = await open_keyring(config.encryption.key_file, sessions)
        redactor = installed_redactor()
        if redactor is not None:
            redactor.add_secret(keyring.e2ee_store_key())
            # Every token and client secret, as it passes (token-shaped ones only; dropped on revoke).
            keyring.on_secret(redactor.add_remote_secret)
            keyring.on_forget(redactor.forget_secret)

        pacers = PacerRegistry()  # one budget per instance, shared by REST calls and stream handshakes
        client = await stack.enter_async_context(
            open_fediverse_client(
                config.fediverse, resolver, pacers=pacers, on_response=metrics.instance_request
            )
        )
        connector = build_stream_connector(config.fediverse, resolver, pacers=pacers)

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

        relay = RelayManager(
            sessions=sessions,
            keyring=keyring,
            client=client,
            connector=connector,
            sender=matrix,
            relay_config=config.relay,
            allow_http=config.fediverse.allow_http,
            command_prefix=config.matrix.command_prefix,
            notify_user=notify_user,
            metrics=metrics,
            room_check=dms.still_private,
            tuning=RelayTuning(max_message_bytes=config.limits.max_message_bytes),
            on_streams_open=freeze_long_lived,
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
        stack.push_async_callback(flows.settle)  # a token a cancelled command got is stored or revoked
        stack.push_async_callback(accounts.settle)  # a revoke a cancelled command started completes
        stack.push_async_callback(router.aclose)  # commands in flight finish before the relay stops

        sync_check = SyncFreshnessCheck()
        matrix.on_sync(sync_check.mark_synced)
        health: HealthServer | None = None
        if config.observability.enabled:
            health = HealthServer(
                config.observability.host,
                config.observability.port,
                metrics,
                [sync_check, DatabaseCheck(sqlalchemy_ping(engine))],
            )
            await health.start()
            stack.push_async_callback(health.stop)

        housekeeping = asyncio.create_task(_housekeeping(sessions, keyring, metrics), name="housekeeping")
        stack.callback(housekeeping.cancel)
        yield Bot(engine, sessions, keyring, matrix, relay, router, metrics, dms, health)


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


async def serve(config: Config, stop: asyncio.Event, *, resolver: Resolver | None = None) -> None:
    """Run the bot until `stop` is set or the sync loop fails."""
    async with running_bot(config, resolver=resolver) as bot:
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


async def _main(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)
    return 0


def run(config: Config) -> int:
    """`gts-bot run`: the process exits with the returned code."""
    return asyncio.run(_main(config))


__all__ = ["Bot", "run", "running_bot", "serve"]
