"""The composition root: builds config-driven pieces once, wires them, owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.accounts import AccountsService
from bot.action_dispatch import ActionDispatcher
from bot.actions.intents import ReactionKeys
from bot.actions.journal import ActionJournal
from bot.actions.service import RESUME_WITHIN, ActionService
from bot.app_base import Role, cancel_task, open_base, require_postgres, start_health, start_listener
from bot.commands.handlers import BotCommands
from bot.commands.throttle import InstanceShare, UserThrottle
from bot.config import Config
from bot.connect import ConnectFlows
from bot.dm_registry import DmDirectory
from bot.fediverse.guard import Resolver
from bot.matrix.adapter import MatrixAdapter
from bot.matrix.session import Credentials
from bot.matrix.types import RoomId, TrustPolicy, UserId
from bot.observability import HealthServer, Metrics, SyncFreshnessCheck
from bot.relay.heap import freeze_long_lived
from bot.relay.manager import RelayManager
from bot.relay.outbox_feed import OutboxFeed
from bot.relay.tuning import RelayTuning
from bot.relay_worker import RelayWorker, running_relay_worker
from bot.router import Router
from bot.store.action_journal import ActionJournalRepository
from bot.store.event_map import RelayedEventsRepository
from bot.store.keyring import KeyRing
from bot.store.pg_notify import ACCOUNTS_CHANNEL, OUTBOX_CHANNEL, notify
from bot.store.records import AccountId, utc_now
from bot.store.repositories import AppsRepository, FlowsRepository, HandledEventsRepository
from bot.store.session_store import DatabaseHandledEvents, DatabaseSessionStore
from bot.store.stats import store_counts

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 60.0
HANDLED_EVENTS_KEPT = timedelta(days=7)
# How long a relayed message can still be reacted or replied to (the event map and the action journal).
ACTIONABLE_EVENTS_KEPT = timedelta(days=90)
UNUSED_APPS_KEPT = timedelta(days=1)


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
async def running_bot(
    config: Config, *, resolver: Resolver | None = None, role: Role = Role.ALL
) -> AsyncIterator[Bot]:
    """Start everything; on exit stop it in reverse order (relay, Matrix, HTTP, database).

    `role` MATRIX: relay no account here; send what relay workers write to the outbox (woken by their
    NOTIFY, polling slowly as a safety net), and announce connected/changed/revoked accounts to them."""
    require_postgres(config, role)
    async with AsyncExitStack() as stack:
        base = await open_base(stack, config, resolver, "matrix" if role is Role.MATRIX else None)
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
        actions = ActionService(
            journal=ActionJournal(sessions, keyring),
            writer=client.actions,
            credentials=client,
            allow_http=config.fediverse.allow_http,
            clock=time.monotonic,
            keys=ReactionKeys.of(config.actions.favourite_reactions, config.actions.boost_reactions),
        )
        router = Router(
            acting=ActionDispatcher(
                actions=actions, matrix=matrix, dms=dms, prefix=config.matrix.command_prefix
            ),
            matrix=matrix,
            dms=dms,
            commands=BotCommands(flows=flows, accounts=accounts, clock=utc_now, posting=actions, dms=dms),
            flows=flows,
            handled=DatabaseHandledEvents(sessions),
            config=config.matrix,
            throttle=UserThrottle(config.limits.commands_per_minute, time.monotonic),
            relay=relay,
            bot_user_id=config.matrix.user_id,
            clock=time.monotonic,
        )
        dms.on_lost(router.dm_lost)
        resume = _AfterFirstSync(router.resume_actions)  # the rooms are known again by then
        matrix.on_sync(resume)
        stack.callback(resume.cancel)
        await relay.start()
        stack.push_async_callback(relay.stop)
        if role is Role.MATRIX:
            feed = OutboxFeed(sessions, keyring, relay.take_outbox)
            relay.on_outbox_removed(feed.rows_gone)
            start_listener(stack, config, [OUTBOX_CHANNEL], lambda _channel, _payload: feed.wake())
            feeding = asyncio.create_task(feed.run(), name="outbox-feed")
            stack.push_async_callback(cancel_task, feeding)
        stack.push_async_callback(flows.settle)  # a token a cancelled command got is stored or revoked
        stack.push_async_callback(accounts.settle)  # a revoke a cancelled command started completes
        stack.push_async_callback(router.aclose)  # commands in flight finish before the relay stops

        sync_check = SyncFreshnessCheck()
        matrix.on_sync(sync_check.mark_synced)
        health = await start_health(stack, config, base, sync_check)

        housekeeping = asyncio.create_task(_housekeeping(sessions, keyring, metrics), name="housekeeping")
        stack.callback(housekeeping.cancel)
        yield Bot(engine, sessions, keyring, matrix, relay, router, metrics, dms, health)


class _AfterFirstSync:
    """Runs `work` once, in a task of its own, after the first sync; failures are logged."""

    def __init__(self, work: Callable[[], Awaitable[None]]) -> None:
        self._work = work
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="after-first-sync")

    async def _run(self) -> None:
        try:
            await self._work()
        except Exception:
            log.exception("resuming unfinished actions failed")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _housekeeping(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, metrics: Metrics
) -> None:
    while True:
        try:
            async with sessions() as session, session.begin():
                now = utc_now()
                await FlowsRepository(session, keyring).delete_expired(now)
                await AppsRepository(session, keyring).delete_unused(now - UNUSED_APPS_KEPT)
                await HandledEventsRepository(session).prune(now - HANDLED_EVENTS_KEPT)
                await RelayedEventsRepository(session).prune(now - ACTIONABLE_EVENTS_KEPT)
                journal = ActionJournalRepository(session)
                await journal.prune(now - ACTIONABLE_EVENTS_KEPT)
                await journal.forget_texts(now - RESUME_WITHIN)
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
