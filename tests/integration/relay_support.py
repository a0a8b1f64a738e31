"""Shared pieces of the relay tests: fast relay settings, and a harness that wires the RelayManager to a
FakeGoToSocial, a real database and the recording Matrix fake (tests/fakes/matrix.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
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
from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxRecord, OutboxRepository
from bot.store.records import AccountId, AccountRecord
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.matrix import RecordingMatrix
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
)
FAST_POLL = RelayConfig(streaming=True, poll_interval=0.1, poll_jitter=0.2)


@dataclass
class Notified:
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def __call__(self, user: str, plain: str, html: str) -> None:
        self.calls.append((user, plain, html))


@dataclass
class Naps:
    """The relay's injected sleep: it really sleeps, and records each delay, so a test can wait until the
    relay has reached a pause (or has looked again N times) instead of sleeping a guessed time itself."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)

    def count(self, delay: float) -> int:
        return self.delays.count(delay)


@dataclass
class Harness:
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    client: FediverseClient
    connector: StreamConnector
    sender: RecordingMatrix
    notified: Notified
    naps: Naps = field(default_factory=Naps)
    managers: list[RelayManager] = field(default_factory=list)

    def manager(
        self,
        *,
        config: RelayConfig = FAST_POLL,
        tuning: RelayTuning = FAST,
        sender: RecordingMatrix | None = None,
        metrics: Metrics | None = None,
        room_check: RoomCheck | None = None,
        on_streams_open: Callable[[], None] | None = None,
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
            sleep=self.naps,
            rng=random.Random(7),
            room_check=room_check,
            on_streams_open=on_streams_open,
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
        """Record (or, with None, forget) the user's DM room, as bot.dm_registry does."""
        async with self.sessions() as s, s.begin():
            rooms = Repositories(s, self.keyring).dm_rooms
            if room_id is None:
                await rooms.delete(matrix_user_id)
            else:
                await rooms.set(matrix_user_id, room_id)

    async def outbox(self) -> list[OutboxRecord]:
        async with self.sessions() as s, s.begin():
            return await OutboxRepository(s, self.keyring).list_all()


@asynccontextmanager
async def harness(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(fedi_client())
        connector = build_stream_connector(settings(), ping_interval=5.0, ping_timeout=5.0)
        h = Harness(sessions, keyring, client, connector, RecordingMatrix(), Notified())
        try:
            yield h
        finally:
            for manager in h.managers:
                await manager.stop()


async def cursor_is(h: Harness, account_id: AccountId, expected: str) -> bool:
    return (await h.account(account_id)).cursor == expected
