"""`gts-bot run --role relay`: a relay worker of a split deployment (README, "Past one process").

It claims account leases (`bot.relay.lease_keeper`), relays those accounts into the outbox with the
cursors, NOTIFYing the Matrix process in the same transaction, and hears account changes from the Matrix
process by LISTEN. It never talks to Matrix. On exit it stops relaying, then frees its leases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app_base import (
    WORKER_ID_MAX,
    Role,
    cancel_task,
    default_worker_id,
    open_base,
    require_postgres,
    start_health,
    start_listener,
)
from bot.config import Config
from bot.errors import ConfigError, WorkerIdInUseError
from bot.fediverse.guard import Resolver
from bot.observability import HealthServer, Metrics
from bot.relay.heap import freeze_long_lived
from bot.relay.lease_keeper import LeaseKeeper, LeaseTiming
from bot.relay.manager import RelayManager
from bot.relay.notices import OutboxNotices
from bot.relay.tuning import RelayTuning
from bot.store.pg_notify import ACCOUNTS_CHANNEL
from bot.store.records import AccountId

__all__ = ["RelayWorker", "running_relay_worker"]

log = logging.getLogger(__name__)


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
        base = await open_base(stack, config, resolver, worker_id, may_create_key=False)
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
            notify_user=OutboxNotices(sessions, base.keyring),
            metrics=base.metrics,
            tuning=RelayTuning(max_message_bytes=config.limits.max_message_bytes),
            write_guard=write_guard,
            on_streams_open=freeze_long_lived,
        )
        keeper = LeaseKeeper(
            sessions,
            worker_id,
            on_claimed=relay.restart_account,
            on_lost=relay.remove_account,
            timing=timing,
        )
        holder.append(keeper)
        if not await keeper.register():
            raise WorkerIdInUseError(
                f"a relay worker {worker_id!r} is already running (its heartbeat is live): give every "
                "process its own --worker-id; if that worker died, this one starts once its heartbeat "
                f"expired ({keeper.ttl.total_seconds():.0f} s after the last)"
            )
        await relay.start()
        stack.push_async_callback(keeper.retire)  # after the relay stopped: nothing more is written
        stack.push_async_callback(relay.stop)
        changes: set[asyncio.Task[None]] = set()

        def accounts_changed(_channel: str, payload: str | None) -> None:
            if payload is None:  # (re)connected: announcements meanwhile are lost; anything may have changed
                change = relay.restart_changed()
            elif payload.isdigit():
                change = keeper.account_changed(AccountId(int(payload)))
            else:
                keeper.wake()
                return
            task = asyncio.create_task(change)
            changes.add(task)
            task.add_done_callback(changes.discard)
            keeper.wake()

        start_listener(stack, config, [ACCOUNTS_CHANNEL], accounts_changed)
        await keeper.round()
        keeping = asyncio.create_task(keeper.run(), name="lease-keeper")
        stack.push_async_callback(cancel_task, keeping)
        health = await start_health(stack, config, base)
        log.info("relay worker %s is running", worker_id)
        yield RelayWorker(sessions, relay, keeper, base.metrics, health)
