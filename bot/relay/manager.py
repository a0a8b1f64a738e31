"""The relay manager: one task per active account, one delivery worker per Matrix user.

Lifecycle for the composition root and the commands:

- `await start()`: re-send messages left in the outbox by an earlier run (before anything new for the
  same user), then start relaying every ACTIVE account.
- `await restart_account(id)`: after the account changed (connected again with a new token, paused,
  resumed, notification types changed): stops its relay and starts it again if it is ACTIVE. A resumed
  account catches up from its cursor, so notifications that arrived while paused ARE delivered, grouped.
- `await remove_account(id)`: the connection is being revoked or deleted (or paused): the stream is
  closed before this returns, and the account stays stopped until `restart_account(id)`: resuming a
  user (a new DM) never restarts it, so a slow revoke cannot race a restart. Messages already in the
  outbox still go out.
- `await suspend_user(user)`: the user left their DM (or the bot was removed from it): their relays stop
  and their queued, not-yet-outboxed items are dropped (cursors stay behind them, accounts stay ACTIVE).
  Outbox messages wait for a DM room. `dm_room_changed(user)` (a DM was recorded) lifts the suspension
  and starts the user's ACTIVE accounts that are not running.
- `room_check(user, room)` (optional) is asked before each send whether the DM is still private; when
  it is not, the messages wait for a new DM (the check's owner drops the record and suspends the user).
- `await forget_user(user)`: forget-me: relays stopped, queue and outbox messages dropped.
- `await stop()`: streams closed, workers stopped; a message being sent stays in the outbox and is sent
  again (same transaction id) on the next start.

Split deployments (`gts-bot run --role relay|matrix` on PostgreSQL):

- A relay worker's manager has no `sender`: `start()` starts nothing, its lease keeper calls
  `restart_account` for each account it claims and `remove_account` for each it loses; deliveries only write
  the outbox (hand-off mode, fenced by `write_guard`).
- The Matrix process's manager gets `accounts_elsewhere`: it relays no account itself; `restart_account`
  and `remove_account` announce the change to the workers through it, and the outbox rows the workers write
  reach it through `take_outbox` (see `bot.relay.outbox_feed`).

A 401 marks the account BROKEN (unless a reconnect stored another token meanwhile) and tells the user once
how to reconnect (`notify_user`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import RelayConfig
from bot.errors import FediverseError, new_reference
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.streaming import StreamConnector
from bot.observability.metrics import Metrics
from bot.relay.account_relay import AccountBroken, AccountRelay, RelayDeps
from bot.relay.breaker import BreakerRegistry
from bot.relay.delivery import MatrixSender, RoomCheck, UserDelivery
from bot.relay.delivery_store import DeliveryStore
from bot.relay.ids import max_id
from bot.relay.outbox_writer import OutboxWriter, WriteGuard, advance_cursors
from bot.relay.tuning import RelayTuning
from bot.rich_text import RichText, bold, code
from bot.store.db import take_write_lock
from bot.store.keyring import KeyRing
from bot.store.models import AccountState
from bot.store.outbox import OutboxRecord, OutboxRepository
from bot.store.records import AccountId, AccountRecord
from bot.store.repositories import AccountsRepository

__all__ = ["AccountsElsewhere", "NotifyUser", "RelayManager", "broken_message"]

log = logging.getLogger(__name__)

NotifyUser = Callable[[str, str, str], Awaitable[None]]  # (matrix user id, plain, html)
AccountsElsewhere = Callable[[AccountId], Awaitable[None]]  # tells relay workers an account changed


def _relay_settings(account: AccountRecord) -> tuple[object, ...]:
    """What a running relay took from the account when it started (its cursor moves on by itself)."""
    return (account.token, account.state, account.notify_types, account.instance, account.software)


def broken_message(acct: str, instance: str, reason: str, prefix: str) -> tuple[str, str]:
    why = {
        "rejected": "the server rejected the token; it may have been revoked",
        "login": "the instance says your login is unconfirmed, waiting for approval, or disabled",
    }.get(reason, "the token is not allowed to read notifications")
    command = f"{prefix} connect {instance}"
    message = (
        RichText.text("Your account ")
        + bold(f"@{acct}")
        + RichText.text(f" stopped working ({why}). Reconnect with ")
        + code(command)
    )
    return message.plain, message.html


@dataclass
class _Running:
    relay: AccountRelay
    task: asyncio.Task[None]


class RelayManager:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        client: FediverseClient,
        connector: StreamConnector,
        sender: MatrixSender | None,
        relay_config: RelayConfig,
        allow_http: bool,
        command_prefix: str,
        notify_user: NotifyUser,
        metrics: Metrics | None = None,
        tuning: RelayTuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        room_check: RoomCheck | None = None,
        write_guard: WriteGuard | None = None,
        accounts_elsewhere: AccountsElsewhere | None = None,
        on_streams_open: Callable[[], None] | None = None,
    ) -> None:
        """`on_streams_open`: called once, when every account started by `start` has its stream open
        (the composition root settles the heap there; see `relay.heap`)."""
        self._sessions = sessions
        self._outbox_writer = OutboxWriter(sessions, keyring, write_guard=write_guard)
        self._elsewhere = accounts_elsewhere
        self._room_check = room_check
        self._on_streams_open = on_streams_open
        self._keyring = keyring
        self._sender = sender
        self._allow_http = allow_http
        self._prefix = command_prefix
        self._notify_user = notify_user
        self._metrics = metrics
        self._tuning = tuning if tuning is not None else RelayTuning()
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not security
        self._sleep = sleep
        self._deps = RelayDeps(
            client=client,
            connector=connector,
            config=relay_config,
            tuning=self._tuning,
            rng=self._rng,
            clock=clock,
            sleep=sleep,
            on_stream_change=self._stream_changed,
        )
        t = self._tuning
        self._breakers = BreakerRegistry(
            threshold=t.breaker_threshold,
            cooldown=t.breaker_cooldown,
            max_cooldown=t.breaker_max_cooldown,
            clock=clock,
            on_change=metrics.set_open_circuit_breakers if metrics is not None else None,
        )
        self._running: dict[AccountId, _Running] = {}
        self._deliveries: dict[str, tuple[UserDelivery, asyncio.Task[None]]] = {}
        self._locks: dict[AccountId, asyncio.Lock] = {}
        self._removed: set[AccountId] = set()  # stopped on purpose; only restart_account starts them
        self._suspended: set[str] = set()
        self._resuming: set[asyncio.Task[None]] = set()
        self._live_streams = 0
        self._started = False
        self._started_all = False  # `start` has started every account it found
        self._outbox_removed_callbacks: list[Callable[[], None]] = []

    # -- public ------------------------------------------------------------------------------------------

    @property
    def live_streams(self) -> int:
        """Open streaming connections."""
        return self._live_streams

    @property
    def relaying_accounts(self) -> int:
        return len(self._running)

    @property
    def open_circuit_breakers(self) -> int:
        return self._breakers.open_count

    @property
    def relays_held_back(self) -> int:
        """Account relays waiting for room in their user's delivery queue (back-pressure at work)."""
        return sum(delivery.relays_waiting for delivery, _ in self._deliveries.values())

    @property
    def queued_notifications(self) -> int:
        """Notifications received (stream buffers) or handed over but not yet delivered, plus outbox
        messages not yet sent."""
        buffered = sum(running.relay.buffered for running in self._running.values())
        return buffered + sum(delivery.backlog for delivery, _ in self._deliveries.values())

    @property
    def queued_bytes(self) -> int:
        """What the stream buffers and the delivery queues (not yet in the outbox) hold in memory."""
        buffered = sum(running.relay.buffered_bytes for running in self._running.values())
        return buffered + sum(delivery.pending_bytes for delivery, _ in self._deliveries.values())

    def account_mode(self, account_id: AccountId) -> str | None:
        """ "streaming", "polling", "starting", or None when the account is not being relayed."""
        running = self._running.get(account_id)
        return None if running is None else running.relay.mode

    @property
    def _relays_all_accounts(self) -> bool:
        """A single-process bot: every ACTIVE account is relayed here from the start."""
        return self._sender is not None and self._elsewhere is None

    async def start(self) -> None:
        self._started = True
        if not self._relays_all_accounts:
            return  # a worker: its lease keeper says what to relay; split Matrix process: OutboxFeed
        async with self._sessions() as session, session.begin():
            leftovers = await OutboxRepository(session, self._keyring).list_all()
            accounts = await AccountsRepository(session, self._keyring).list_active()
        if leftovers:
            log.info("re-sending %d relay message(s) left in the outbox", len(leftovers))
        self.take_outbox(leftovers)
        for account in accounts:
            async with self._lock(account.id):
                await self._start_account(account)
        self._started_all = True
        self._check_streams_open()

    def on_outbox_removed(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a delivery is done with outbox messages (the split Matrix process's
        `OutboxFeed` hands over more of a user's rows then)."""
        self._outbox_removed_callbacks.append(callback)

    def _outbox_removed(self) -> None:
        for callback in self._outbox_removed_callbacks:
            callback()

    def take_outbox(self, records: list[OutboxRecord]) -> None:
        """Send these outbox rows (oldest first), each after what its user's delivery already holds."""
        by_user: dict[str, list[OutboxRecord]] = {}
        for record in records:
            by_user.setdefault(record.matrix_user_id, []).append(record)
        for user, rows in by_user.items():
            self._delivery(user).load_outbox(rows)

    async def restart_account(self, account_id: AccountId) -> None:
        if self._elsewhere is not None:
            await self._elsewhere(account_id)
            return
        async with self._lock(account_id):
            self._removed.discard(account_id)
            await self._stop_account(account_id)
            if not self._started:
                return
            async with self._sessions() as session, session.begin():
                account = await AccountsRepository(session, self._keyring).get(account_id)
            if account is not None and account.state is AccountState.ACTIVE:
                await self._start_account(account)

    async def restart_changed(self) -> None:
        """Change announcements may have been missed (a relay worker's LISTEN connection was lost):
        restart every running account whose stored token or settings differ from those it runs with."""
        async with self._sessions() as session, session.begin():
            stored = {a.id: a for a in await AccountsRepository(session, self._keyring).list_active()}
        for account_id, running in list(self._running.items()):
            record = stored.get(account_id)
            if record is None or _relay_settings(record) != _relay_settings(running.relay.account):
                await self.restart_account(account_id)

    async def remove_account(self, account_id: AccountId) -> None:
        if self._elsewhere is not None:
            await self._elsewhere(account_id)  # the worker stops it once it sees the account changed
            return
        async with self._lock(account_id):
            self._removed.add(account_id)
            await self._stop_account(account_id)

    async def stop(self) -> None:
        self._started = False
        resuming = list(self._resuming)
        for task in resuming:
            task.cancel()
        await asyncio.gather(*resuming, return_exceptions=True)
        for account_id in list(self._running):
            await self._stop_account(account_id, forget=False)
        tasks = [task for _, task in self._deliveries.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._deliveries.clear()
        await self._outbox_writer.wait_idle()  # steps already in a transaction finish before stop returns

    def dm_room_changed(self, matrix_user_id: str) -> None:
        """A DM room was recorded for the user: deliver what waits for it now, and relay their ACTIVE
        accounts again if they were suspended (that happens in the background; see `resume_user`)."""
        self._suspended.discard(matrix_user_id)
        entry = self._deliveries.get(matrix_user_id)
        if entry is not None:
            entry[0].room_changed()
        if self._started and self._relays_all_accounts:
            task = asyncio.create_task(
                self.resume_user(matrix_user_id), name=f"relay-resume-{matrix_user_id}"
            )
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

    async def resume_user(self, matrix_user_id: str) -> None:
        """Start the user's ACTIVE accounts that are not running (unless the user is suspended)."""
        async with self._sessions() as session, session.begin():
            listed = await AccountsRepository(session, self._keyring).list_for_user(matrix_user_id)
        for account_id in [a.id for a in listed]:
            await self._start_stored(account_id)

    async def suspend_user(self, matrix_user_id: str) -> None:
        """Stop relaying to a user who has no usable DM any more; nothing is lost (see the module doc)."""
        self._suspended.add(matrix_user_id)
        await self._stop_user(matrix_user_id)
        entry = self._deliveries.get(matrix_user_id)
        if entry is not None:
            await entry[0].drop_pending()
            entry[0].room_changed()  # outbox messages: look at the DM record again before sending
        log.info("relaying to %s suspended until they have a DM with the bot again", matrix_user_id)

    async def forget_user(self, matrix_user_id: str) -> None:
        """Forget-me: stop the user's relays and drop everything queued for them, outbox included."""
        self._suspended.discard(matrix_user_id)
        await self._stop_user(matrix_user_id)
        entry = self._deliveries.pop(matrix_user_id, None)
        if entry is not None:
            entry[1].cancel()
            await asyncio.gather(entry[1], return_exceptions=True)
        async with self._sessions() as session, session.begin():
            await OutboxRepository(session).delete_for_user(matrix_user_id)

    # -- internals ------------------------------------------------------------------------------------------

    async def _stop_user(self, matrix_user_id: str) -> None:
        for account_id in [
            a for a, r in self._running.items() if r.relay.account.matrix_user_id == matrix_user_id
        ]:
            async with self._lock(account_id):
                await self._stop_account(account_id)

    async def _start_stored(self, account_id: AccountId) -> None:
        """Start the account as stored now, unless it is running or was stopped on purpose."""
        async with self._lock(account_id):
            if not self._started or account_id in self._running or account_id in self._removed:
                return
            # Read under the lock: a revoke or pause may have finished since the caller looked.
            async with self._sessions() as session, session.begin():
                account = await AccountsRepository(session, self._keyring).get(account_id)
            if account is not None and account.state is AccountState.ACTIVE:
                await self._start_account(account)

    def _lock(self, account_id: AccountId) -> asyncio.Lock:
        return self._locks.setdefault(account_id, asyncio.Lock())

    def _delivery(self, matrix_user_id: str) -> UserDelivery:
        entry = self._deliveries.get(matrix_user_id)
        if entry is None:
            delivery = UserDelivery(
                matrix_user_id,
                store=DeliveryStore(
                    self._sessions, self._outbox_writer, matrix_user_id, on_removed=self._outbox_removed
                ),
                sender=self._sender,
                tuning=self._tuning,
                metrics=self._metrics,
                rng=self._rng,
                room_check=self._room_check,
                sleep=self._sleep,
            )
            task = asyncio.create_task(delivery.run(), name=f"relay-delivery-{matrix_user_id}")
            entry = (delivery, task)
            self._deliveries[matrix_user_id] = entry
        return entry[0]

    async def _start_account(self, account: AccountRecord) -> None:
        if (
            self._elsewhere is not None
            or account.matrix_user_id in self._suspended
            or account.id in self._running
            or account.id in self._removed
        ):
            return
        try:
            instance = parse_instance(account.instance, allow_http=self._allow_http)
        except FediverseError:
            log.warning("account %s: stored instance is not usable any more; not relaying", account.id)
            return
        async with self._sessions() as session, session.begin():
            accounts = AccountsRepository(session, self._keyring)
            several = await accounts.count_for_user(account.matrix_user_id) > 1
            # Written to the outbox (maybe by another worker, before it died) but not sent yet.
            waiting = await OutboxRepository(session).waiting_cursors(account.matrix_user_id, account.id)
        if account.matrix_user_id in self._suspended or not self._started:
            return  # suspended (or stopped) while the count was read
        delivery = self._delivery(account.matrix_user_id)
        cursor = account.cursor
        inflight = delivery.inflight_cursor(account.id)
        if cursor is not None:
            cursor = max_id([cursor, *waiting, *([inflight] if inflight is not None else [])])
        relay = AccountRelay(
            self._deps,
            account,
            instance,
            delivery,
            self._breakers.get(instance.key, instance.display),
            cursor=cursor,
            account_label=account.acct if several else None,
            save_cursor=lambda c: self._save_cursor(account.id, c),
        )
        task = asyncio.create_task(self._supervise(relay, instance), name=f"relay-account-{account.id}")
        self._running[account.id] = _Running(relay, task)

    async def _stop_account(self, account_id: AccountId, *, forget: bool = True) -> None:
        running = self._running.pop(account_id, None)
        if running is None:
            return
        await running.relay.close_stream()
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        entry = self._deliveries.get(running.relay.account.matrix_user_id)
        if forget and entry is not None:
            await entry[0].forget(account_id)

    async def _save_cursor(self, account_id: AccountId, cursor: str) -> None:
        async with self._sessions() as session, session.begin():
            await take_write_lock(session)
            await advance_cursors(AccountsRepository(session, self._keyring), {account_id: cursor})

    async def _supervise(self, relay: AccountRelay, instance: InstanceRef) -> None:
        account = relay.account
        while True:
            try:
                await relay.run()
            except AccountBroken as broken:
                await self._mark_broken(relay, instance, broken.reason)
                return
            except Exception:
                ref = new_reference()
                log.exception("relay for account %s failed (ref %s); restarting it", account.id, ref)
                await asyncio.sleep(self._tuning.reconnect_cap)
            else:
                return

    async def _mark_broken(self, relay: AccountRelay, instance: InstanceRef, reason: str) -> None:
        account = relay.account
        running = self._running.get(account.id)
        current = running is not None and running.relay is relay
        if current:
            del self._running[account.id]
        async with self._sessions() as session, session.begin():
            accounts = AccountsRepository(session, self._keyring)
            marked = await accounts.mark_broken_if_token(account.id, account.token)
        if not marked:
            log.info(
                "account %s: an old token was rejected, but a newer one is stored; not broken", account.id
            )
            if current:  # nobody restarted it with the new token (a relay worker can miss the NOTIFY)
                await self._start_stored(account.id)
            return
        log.warning("account %s on %s: token no longer works (%s); now broken", account.id, instance, reason)
        plain, rich = broken_message(account.acct, instance.display, reason, self._prefix)
        try:
            await self._notify_user(account.matrix_user_id, plain, rich)
        except Exception:
            log.exception("could not tell %s that an account stopped working", account.matrix_user_id)

    def _check_streams_open(self) -> None:
        callback = self._on_streams_open
        if callback is not None and self._started_all and self._live_streams >= len(self._running):
            self._on_streams_open = None
            callback()

    def _stream_changed(self, delta: int) -> None:
        self._live_streams += delta
        self._check_streams_open()
        if self._metrics is not None:
            self._metrics.set_live_streams(self._live_streams)
