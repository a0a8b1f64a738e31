"""One instance budget for everything the bot asks of a GoToSocial instance: stream handshakes count in
the same per-IP window as REST calls (reference §9), so they wait on the same pacer, and a restart with
many accounts opens every stream without a single 429.

The fake's rate-limit windows and the pacers run on one virtual clock that the pacers' sleep moves on,
so waiting out a 5-minute window takes no real time and nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import RateLimitedError
from bot.fediverse.instance import parse_instance
from bot.fediverse.ratelimit import PacerRegistry
from bot.fediverse.streaming import NotificationStream, build_stream_connector
from bot.relay.manager import RelayManager
from bot.store.keyring import KeyRing
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.fedi_support import fedi_client, settings
from tests.integration.relay_support import FAST, FAST_POLL, harness
from tests.waiting import wait_until

WINDOW = 300.0


class VirtualTime:
    """Wall-clock seconds that only sleeps move forward: a sleep wakes at (now + delay), and the clock
    stands at the latest wake-up so far, so sleepers that overlap do not add up."""

    def __init__(self) -> None:
        self.start = self.now = time.time()

    def clock(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    async def sleep(self, delay: float) -> None:
        self.now = max(self.now, self.now + delay)
        await asyncio.sleep(0)


@pytest.fixture
async def vtime() -> VirtualTime:
    return VirtualTime()


async def limited_fake(vtime: VirtualTime, limit: int) -> FakeGoToSocial:
    fake = FakeGoToSocial(rate_limit=limit, rate_window=WINDOW)
    fake.state.rate_clock = vtime.clock
    await fake.start()
    return fake


@pytest.fixture
async def small_budget(vtime: VirtualTime) -> AsyncIterator[FakeGoToSocial]:
    fake = await limited_fake(vtime, 6)
    try:
        yield fake
    finally:
        await fake.stop()


async def test_stream_handshakes_wait_on_the_instance_budget(
    small_budget: FakeGoToSocial, vtime: VirtualTime
) -> None:
    gts = small_budget
    gts.add_user("alice")
    token = gts.issue_token("alice")
    instance = parse_instance(gts.base_url, allow_http=True)
    pacers = PacerRegistry(clock=vtime.clock, sleep=vtime.sleep)
    connector = build_stream_connector(settings(), pacers=pacers)
    streams: list[NotificationStream] = []
    async with fedi_client(pacers=pacers) as client:
        await client.notifications(instance, token, limit=1)  # the pacer learns the budget (6 a window)
        try:
            for _ in range(8):  # 1 + 8 requests: more than one window holds
                stream = connector.stream(instance, token)
                await stream.connect()
                streams.append(stream)
        finally:
            for stream in streams:
                await stream.aclose()
    assert len(streams) == 8
    assert gts.requests_to("/api/v1/streaming") == 8
    assert gts.rate_limited_responses == 0
    assert vtime.elapsed >= WINDOW  # the handshakes waited for the next window instead


async def test_a_handshake_answered_429_blocks_the_instance_pacer(
    small_budget: FakeGoToSocial, vtime: VirtualTime
) -> None:
    """Someone else spent the budget: the 429 a handshake gets holds back the instance's next request."""
    gts = small_budget
    gts.add_user("alice")
    token = gts.issue_token("alice")
    instance = parse_instance(gts.base_url, allow_http=True)
    gts.state.rate_buckets[("client", "127.0.0.1")] = (vtime.now + 100.0, 6, vtime.now)
    pacers = PacerRegistry(clock=vtime.clock, sleep=vtime.sleep)
    connector = build_stream_connector(settings(), pacers=pacers)
    with pytest.raises(RateLimitedError) as caught:
        await connector.stream(instance, token).connect()
    assert caught.value.retry_after >= 99
    async with fedi_client(pacers=pacers) as client:
        await client.notifications(instance, token, limit=1)
    assert gts.rate_limited_responses == 1  # the REST call waited out the window instead of a second 429
    assert vtime.elapsed >= 99


async def test_restart_opens_every_stream_within_the_instance_budget(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, vtime: VirtualTime
) -> None:
    """Starting costs a request for the streaming URL, then a handshake and a catch-up per account. The
    first process starts 8 accounts (17 of the window's 40, no pacing needed); after 16 more connect, a
    restart in the same window (a new process: new pacers) needs 49 and must wait for the next window
    rather than take 429s. (On virtual time, a waiting catch-up moves the clock for everyone, so this
    checks the whole start-up path; the handshake pacing itself is proven by the tests above.)"""
    gts = await limited_fake(vtime, 40)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(gts.stop)
        h = await stack.enter_async_context(harness(sessions, keyring))

        async def start_process(accounts: int) -> RelayManager:
            pacers = PacerRegistry(clock=vtime.clock, sleep=vtime.sleep)
            client = await stack.enter_async_context(fedi_client(pacers=pacers))
            manager = RelayManager(
                sessions=sessions,
                keyring=keyring,
                client=client,
                connector=build_stream_connector(settings(), pacers=pacers),
                sender=h.sender,
                relay_config=FAST_POLL,
                allow_http=True,
                command_prefix="!gts",
                notify_user=h.notified,
                tuning=FAST,
                sleep=vtime.sleep,
                rng=random.Random(5),
            )
            h.managers.append(manager)
            await manager.start()
            await wait_until(lambda: manager.live_streams == accounts, what="every stream open")
            return manager

        for i in range(8):
            await h.add_account(gts, f"u{i}", cursor="0")
        first = await start_process(8)
        first_window_ends = gts.state.rate_buckets[("client", "127.0.0.1")][0]
        await first.stop()
        await wait_until(lambda: gts.open_streams() == 0, what="the old streams closed")
        for i in range(8, 24):
            await h.add_account(gts, f"u{i}", cursor="0")
        await start_process(24)
        assert gts.requests_to("/api/v1/streaming") == 8 + 24
        assert gts.rate_limited_responses == 0
        assert gts.state.rate_buckets[("client", "127.0.0.1")][0] > first_window_ends  # it waited


async def test_a_rate_limited_handshake_waits_and_dials_again_without_polling_or_tripping_the_breaker(
    gts: FakeGoToSocial,
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 429 (or the pacer's "wait too long") at the handshake is the budget talking, not a failing
    instance: no catch-up that spends the same budget, no switch to polling, no open circuit breaker."""
    naps: list[float] = []

    async def sleep(delay: float) -> None:
        naps.append(delay)
        await asyncio.sleep(0)

    async with harness(sessions, keyring) as h:
        account = await h.add_account(gts, "alice", cursor="0")
        instance = parse_instance(gts.base_url, allow_http=True)
        h.connector.endpoints.remember(instance, instance)  # known: no lookup request first
        gts.faults.throttle = True  # every client request: 429, Retry-After: 30
        manager = RelayManager(
            sessions=sessions,
            keyring=keyring,
            client=h.client,
            connector=h.connector,
            sender=h.sender,
            relay_config=FAST_POLL,
            allow_http=True,
            command_prefix="!gts",
            notify_user=h.notified,
            tuning=FAST,
            sleep=sleep,
            rng=random.Random(5),
        )
        h.managers.append(manager)
        await manager.start()
        limited = FAST.stream_failures_before_poll + FAST.breaker_threshold + 1
        await wait_until(lambda: gts.requests_to("/api/v1/streaming") >= limited, what="handshakes refused")
        assert gts.requests_to("/api/v1/notifications") == 0
        assert min(naps) >= 30  # as the instance said
        gts.faults.throttle = False
        await wait_until(lambda: manager.live_streams == 1, what="the stream open once the limit is lifted")
        assert manager.account_mode(account.id) == "streaming"
        assert manager.open_circuit_breakers == 0
        assert "keeps failing" not in caplog.text
