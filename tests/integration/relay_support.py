"""Shared pieces of the relay tests: a recording Matrix sender that dedups by transaction id like Synapse,
fast relay settings, and a harness that wires the RelayManager to a FakeGoToSocial and a real database."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import RelayConfig
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import parse_instance
from bot.fediverse.streaming import StreamConnector, build_stream_connector
from bot.observability.metrics import Metrics
from bot.relay.delivery import RoomCheck
from bot.relay.manager import RelayManager
from bot.relay.tuning import RelayTuning
from bot.store.crypto import KeyRing
from bot.store.outbox import OutboxRecord, OutboxRepository
from bot.store.records import AccountId, AccountRecord
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.fedi_support import fedi_client, settings

FAST = RelayTuning(
    reconnect_base=0.05,
    reconnect_cap=0.3,
    stream_healthy_after=5.0,
    breaker_threshold=3,
    breaker_cooldown=0.3,
    breaker_max_cooldown=0.6,
    send_retry_base=0.05,
    send_retry_cap=0.2,
    no_room_retry=0.1,
    group_window=0.05,
)
FAST_POLL = RelayConfig(streaming=True, poll_interval=0.1, poll_jitter=0.2)


class SendFailed(Exception):
    pass


@dataclass
class Sent:
    room_id: str
    body: str
    html: str
    txn_id: str | None


@dataclass
class RecordingSender:
    """A fake homeserver seam. `events` is what the room shows (a txn id seen before is dropped, as Synapse
    does); `attempts` every call. `fail` makes sends raise; `refuse(room, body)` returns the homeserver's
    error for a send (e.g. MatrixForbidden for a room the bot was kicked from) or None; `gate` holds sends
    until set; `hang_after_record` records the event and then never returns (the process "dies" before it
    learns the send worked)."""

    events: list[Sent] = field(default_factory=list)
    attempts: list[Sent] = field(default_factory=list)
    fail: bool = False
    rate_limited: bool = False
    gate: asyncio.Event | None = None
    hang_after_record: bool = False
    refuse: Callable[[str, str], Exception | None] | None = None
    _seen: set[str] = field(default_factory=set)

    async def send_notice(self, room_id: str, body: str, html: str, *, txn_id: str | None = None) -> str:
        sent = Sent(room_id, body, html, txn_id)
        self.attempts.append(sent)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise SendFailed("homeserver unavailable")
        refused = None if self.refuse is None else self.refuse(room_id, body)
        if refused is not None:
            raise refused
        if txn_id is None or txn_id not in self._seen:
            self.events.append(sent)
            if txn_id is not None:
                self._seen.add(txn_id)
        if self.hang_after_record:
            await asyncio.Event().wait()
        return f"$event{len(self.events)}"

    def bodies(self) -> list[str]:
        return [e.body for e in self.events]


@dataclass
class Notified:
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def __call__(self, user: str, plain: str, html: str) -> None:
        self.calls.append((user, plain, html))


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_for_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Harness:
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    client: FediverseClient
    connector: StreamConnector
    sender: RecordingSender
    notified: Notified
    managers: list[RelayManager] = field(default_factory=list)

    def manager(
        self,
        *,
        config: RelayConfig = FAST_POLL,
        tuning: RelayTuning = FAST,
        sender: RecordingSender | None = None,
        metrics: Metrics | None = None,
        room_check: RoomCheck | None = None,
    ) -> RelayManager:
        manager = RelayManager(
            sessions=self.sessions,
            keyring=self.keyring,
            client=self.client,
            connector=self.connector,
            sender=sender if sender is not None else self.sender,
            relay_config=config,
            allow_http=True,
            command_prefix="!gts",
            notify_user=self.notified,
            metrics=metrics,
            tuning=tuning,
            rng=random.Random(7),
            room_check=room_check,
        )
        self.managers.append(manager)
        return manager

    async def add_account(
        self,
        gts: FakeGoToSocial,
        username: str,
        *,
        matrix_user: str | None = None,
        scope: str = "read",
        cursor: str | None = "keep-none",
        dm_room: str | None = "!dm:example.org",
    ) -> AccountRecord:
        """Connect `username` on `gts` for a Matrix user; cursor "keep-none" leaves it NULL."""
        if username not in gts.state.users:
            gts.add_user(username)
        token = gts.issue_token(username, scope=scope)
        instance = parse_instance(gts.base_url, allow_http=True).key
        user = matrix_user or f"@{username}:example.org"
        async with self.sessions() as s, s.begin():
            repos = Repositories(s, self.keyring)
            app = await repos.apps.get(instance, scope) or await repos.apps.add(
                instance=instance, scopes=scope, client_id=f"client-{username}", client_secret="secret"
            )
            account = await repos.accounts.upsert(
                matrix_user_id=user,
                instance=instance,
                app_id=app.id,
                fediverse_account_id=gts.user(username).account_id,
                acct=f"{username}@{gts.host}",
                token=token,
                scopes=scope,
            )
            if cursor != "keep-none":
                await repos.accounts.set_cursor(account.id, cursor)
            if dm_room is not None:
                await repos.dm_rooms.set(user, dm_room)
            record = await repos.accounts.get(account.id)
        assert record is not None
        return record

    async def account(self, account_id: AccountId) -> AccountRecord:
        async with self.sessions() as s, s.begin():
            record = await Repositories(s, self.keyring).accounts.get(account_id)
        assert record is not None
        return record

    async def set_dm(self, matrix_user_id: str, room_id: str | None) -> None:
        """Record (or, with None, forget) the user's DM room, as bot.dms does."""
        async with self.sessions() as s, s.begin():
            rooms = Repositories(s, self.keyring).dm_rooms
            if room_id is None:
                await rooms.delete(matrix_user_id)
            else:
                await rooms.set(matrix_user_id, room_id)

    async def outbox(self) -> list[OutboxRecord]:
        async with self.sessions() as s, s.begin():
            return await OutboxRepository(s).list_all()


@asynccontextmanager
async def harness(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(fedi_client())
        connector = build_stream_connector(settings(), ping_interval=5.0, ping_timeout=5.0)
        h = Harness(sessions, keyring, client, connector, RecordingSender(), Notified())
        try:
            yield h
        finally:
            for manager in h.managers:
                await manager.stop()


async def cursor_is(h: Harness, account_id: AccountId, expected: str) -> bool:
    return (await h.account(account_id)).cursor == expected
