"""The relay loop of one connected account: stream (or poll) its notifications and hand them to delivery.

Streaming: open the stream first and buffer what it sends, catch up over REST from the cursor (`min_id`
pages, oldest first), then drain the buffer, skipping ids already handed over. Every reconnect repeats
this, so nothing missed while disconnected is lost. The stream is opened where the instance advertises
it (learnt once per instance and process; a 301 to a streaming host is remembered). Polling (one
catch-up every poll interval, with jitter) replaces streaming when it is switched off, when the
streaming server refuses the stream (a 400/401/403 handshake or an in-stream error frame) while REST
still accepts the token, or for a while after the stream keeps failing while REST works.

A catch-up pages until the server has nothing after the cursor: a page shorter than asked for is not the
end (Akkoma caps pages at 40; GoToSocial filters after paging).

Memory stays bounded in bytes whatever the instance sends: each notification kept holds only typed fields
parsed from a bounded copy (`fediverse.bounded`) and its size is known (`retained_bytes`), the stream
buffer holds at most `stream_buffer` of them and `stream_buffer_bytes` (a full buffer stops reading the
stream), nothing is handed over while the user's delivery queue is full (count or bytes), and a catch-up
takes at most `catch_up_pages` pages per round, then waits for delivery to drain and pauses before the
next round. Nothing is dropped: the cursor only moves past what was handed over, so whatever was not read
yet is fetched again by a later catch-up.

A rate-limited handshake (a 429, or the instance's pacer saying the wait is too long) is the budget,
not a failure: the relay waits as told and dials again, without a catch-up, a step towards polling, or a
mark on the breaker. Instance failures go through the instance's circuit breaker and this account's
backoff (capped, so a failing account costs at most ~12 requests an hour). A REST 401 ends the loop:
the caller marks the account broken and tells the user (`AccountBroken`). A refused stream handshake is
only a hint: the token is declared rejected when `verify_credentials` with it says 401 too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from bot.config import RelayConfig
from bot.errors import (
    BadResponseError,
    FediverseError,
    InactiveLoginError,
    InstanceUnreachableError,
    InsufficientScopeError,
    PageTooLargeError,
    RateLimitedError,
    StreamRefusedError,
    TokenRejectedError,
    UnexpectedRedirectError,
)
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef
from bot.fediverse.models import Notification
from bot.fediverse.streaming import NotificationStream, StreamConnector, stream_endpoint
from bot.relay.backoff import Backoff
from bot.relay.breaker import CircuitBreaker
from bot.relay.buffer import BoundedBuffer
from bot.relay.delivery import DeliveryItem, UserDelivery
from bot.relay.ids import is_newer, max_id, notification_id_key
from bot.relay.tuning import RelayTuning
from bot.store.records import AccountRecord

__all__ = ["NO_NOTIFICATIONS_CURSOR", "AccountBroken", "AccountRelay", "RelayDeps"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STREAM_FAILURES = (InstanceUnreachableError, BadResponseError, UnexpectedRedirectError)

_Round = Literal["done", "more", "full"]

# Stored as the cursor when an account had no notifications at all: every id is newer than "0".
NO_NOTIFICATIONS_CURSOR = "0"


class AccountBroken(Exception):
    """The instance rejected the token (or it cannot read notifications): the user must reconnect."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RelayDeps:
    client: FediverseClient
    connector: StreamConnector
    config: RelayConfig
    tuning: RelayTuning
    rng: random.Random
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    on_stream_change: Callable[[int], None] | None = None  # +1 / -1


class AccountRelay:
    def __init__(
        self,
        deps: RelayDeps,
        account: AccountRecord,
        instance: InstanceRef,
        delivery: UserDelivery,
        breaker: CircuitBreaker,
        *,
        cursor: str | None,
        account_label: str | None,
        save_cursor: Callable[[str], Awaitable[None]],
    ) -> None:
        self._d = deps
        self.account = account
        self.instance = instance
        self._delivery = delivery
        self._breaker = breaker
        self._cursor = cursor  # newest id handed to delivery (or committed)
        self._label = account_label
        self._save_cursor = save_cursor
        self._types = None if account.notify_types is None else frozenset(account.notify_types)
        t = deps.tuning
        self._backoff = Backoff(base=t.reconnect_base, cap=t.reconnect_cap, rng=deps.rng)
        self._stream_backoff = Backoff(base=t.reconnect_base, cap=t.reconnect_cap, rng=deps.rng)
        self._connected = False
        self._stream: NotificationStream | None = None
        self._buffer: BoundedBuffer[Notification | FediverseError] | None = None
        self.mode = "starting"

    def __repr__(self) -> str:
        return f"AccountRelay({self.account.id}, {self.instance.display!r}, {self.mode})"

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    @property
    def buffered(self) -> int:
        """Stream notifications received but not handed over yet."""
        return 0 if self._buffer is None else len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        """What the buffered stream notifications hold in memory."""
        return 0 if self._buffer is None else self._buffer.bytes

    async def close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            await stream.aclose()

    # -- the loop --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until cancelled; raises AccountBroken when the token stops working."""
        try:
            await self._run()
        except TokenRejectedError:
            raise AccountBroken("rejected") from None
        except InsufficientScopeError:
            raise AccountBroken("scope") from None
        except InactiveLoginError:
            raise AccountBroken("login") from None

    async def _run(self) -> None:
        if self._cursor is None:
            await self._start_at_newest()
        t = self._d.tuning
        poll_until = 0.0 if self._d.config.streaming else math.inf
        poll_for = t.stream_retry_after
        quick_failures = 0
        while True:
            if self._d.clock() < poll_until:
                self.mode = "polling"
                await self._catch_up()
                await self._d.sleep(self._poll_delay())
                continue
            self.mode = "streaming"
            started = self._d.clock()
            self._connected = False
            try:
                await self._stream_session()
            except StreamRefusedError as exc:
                if not exc.in_stream and not await self._token_still_works():
                    raise TokenRejectedError(str(exc)) from None
                where = "in an error frame" if exc.in_stream else "at the handshake"
                log.info("%s: stream refused %s (status %d); polling instead", self, where, exc.status)
                poll_until = math.inf
                continue
            except RateLimitedError as exc:
                # The instance's budget, not its health: wait as told and dial again. No catch-up (it
                # would spend the same budget) and no step towards polling (which spends more).
                delay = max(exc.retry_after, self._stream_backoff.next_delay())
                log.info("%s: stream rate-limited; connecting again in %.1f s", self, delay)
                await self._d.sleep(delay)
            except _STREAM_FAILURES as exc:
                if self._d.clock() - started >= t.stream_healthy_after:
                    quick_failures = 0
                    poll_for = t.stream_retry_after
                    self._stream_backoff.reset()
                quick_failures += 1
                delay = self._stream_backoff.next_delay()
                log.info("%s: stream ended (%s); reconnecting in %.1f s", self, exc, delay)
                await self._d.sleep(delay)
                if not self._connected:
                    # Is it the stream or the whole instance? REST answers that (waiting out an outage
                    # through the breaker) and delivers what came meanwhile.
                    await self._catch_up()
                if quick_failures >= t.stream_failures_before_poll:
                    log.info("%s: the stream keeps failing; polling for %.0f s", self, poll_for)
                    poll_until = self._d.clock() + poll_for
                    poll_for = min(poll_for * 2, 6 * t.stream_retry_after)
                    quick_failures = t.stream_failures_before_poll - 1  # one more failure: back to polling

    async def _token_still_works(self) -> bool:
        """Ask REST whether the token is alive (a stream refusal alone does not tell)."""

        async def verify() -> None:
            await self._d.client.verify_credentials(
                self.instance, self.account.token, account_domain=self.instance.host
            )

        try:
            await self._instance_call(verify)
        except TokenRejectedError:
            return False
        except InsufficientScopeError:
            pass  # the server knows the token; it may only not read the profile
        return True

    async def _find_stream(self) -> InstanceRef:
        async def learn() -> InstanceRef:
            client, token = self._d.client, self.account.token
            advertised = await self._instance_call(lambda: client.streaming_url(self.instance, token))
            return stream_endpoint(self.instance, advertised)

        return await self._d.connector.endpoints.get(self.instance, learn)

    def _poll_delay(self) -> float:
        c = self._d.config
        return c.poll_interval * (1.0 + self._d.rng.uniform(0.0, c.poll_jitter))

    async def _instance_call(self, call: Callable[[], Awaitable[T]], *, live: bool = False) -> T:
        """Run a REST step through the breaker, retrying instance failures with capped backoff."""
        while True:
            await self._breaker.acquire()
            try:
                result = await call()
            except RateLimitedError as exc:
                await self._d.sleep(max(exc.retry_after, self._backoff.next_delay()))
                continue
            except (InstanceUnreachableError, BadResponseError) as exc:
                self._breaker.record_failure()
                delay = self._backoff.next_delay()
                log.info("%s: %s; retrying in %.1f s", self, exc, delay)
                await self._d.sleep(delay)
                continue
            self._breaker.record_success()
            self._backoff.reset()
            return result

    async def _start_at_newest(self) -> None:
        """No cursor yet: start at the newest notification, relaying none of the backlog."""

        async def newest() -> str:
            try:
                page = await self._d.client.notifications(self.instance, self.account.token, limit=1)
            except PageTooLargeError as exc:
                if exc.first_id is None:
                    raise
                return exc.first_id
            return max_id(page.all_ids) or NO_NOTIFICATIONS_CURSOR

        cursor = await self._instance_call(newest)
        await self._save_cursor(cursor)
        self._cursor = cursor

    async def _catch_up(self) -> None:
        """Hand over everything after the cursor, oldest first, in rounds of `catch_up_pages` pages."""
        t = self._d.tuning
        while True:
            await self._delivery.wait_for_capacity()
            outcome = await self._instance_call(self._catch_up_round)
            if outcome == "done":
                return
            if outcome == "more":  # a long backlog (or an instance that never stops): pace it
                log.info("%s: %d catch-up pages in a row; continuing after a pause", self, t.catch_up_pages)
                await self._delivery.wait_drained()
                await self._d.sleep(t.catch_up_pause)

    async def _catch_up_round(self) -> _Round:
        limit = self._d.tuning.page_limit
        for index in range(self._d.tuning.catch_up_pages):
            if index > 0 and self._delivery.full:  # (the caller waited for room before the first page)
                return "full"
            try:
                page = await self._d.client.notifications(
                    self.instance, self.account.token, min_id=self._cursor, limit=limit
                )
            except PageTooLargeError as exc:
                limit = self._past_oversized(exc, limit)
                continue
            newest = max_id(page.all_ids)
            if newest is None or not is_newer(newest, self._cursor):
                return "done"  # nothing (more) after the cursor
            self._hand_over(sorted(page.items, key=lambda n: notification_id_key(n.id)), live=False)
            self._cursor = newest  # also past unreadable items (page.skipped_ids), which are not relayed
            # A short page is not the end: only a page with nothing after the cursor is.
        return "more"

    def _past_oversized(self, exc: PageTooLargeError, limit: int) -> int:
        """A page too large to read: ask for fewer notifications; at one, skip that one by its id, so one
        oversized notification cannot stop the cursor. Returns the limit for the next page."""
        if limit > 1:
            return max(1, limit // 8)
        if exc.first_id is None or not is_newer(exc.first_id, self._cursor):
            raise exc  # nothing safe to skip to: retried with backoff, like any bad answer
        log.warning("%s: notification %s is larger than the bot reads; skipping it", self, exc.first_id)
        self._cursor = exc.first_id
        return self._d.tuning.page_limit

    def _hand_over(self, notifications: list[Notification], *, live: bool) -> None:
        out: list[DeliveryItem] = []
        for n in notifications:
            if not is_newer(n.id, self._cursor):
                continue
            self._cursor = n.id
            out.append(
                DeliveryItem(
                    account_id=self.account.id,
                    id=n.id,
                    type=n.type,
                    notification=n,
                    instance_display=self.instance.display,
                    account_label=self._label,
                    relay=self._types is None or n.type in self._types,
                    live=live,
                    created_at=n.created_at,
                    size=n.retained_bytes,
                )
            )
        self._delivery.submit(out)

    async def _stream_session(self) -> None:
        """One connection: connect, catch up, then relay live until the stream fails (raises)."""
        endpoint = await self._find_stream()
        await self._breaker.acquire()
        stream = self._d.connector.stream(self.instance, self.account.token, endpoint=endpoint)
        try:
            await stream.connect()
        except InstanceUnreachableError:
            self._breaker.record_failure()
            raise
        self._breaker.record_success()
        self._d.connector.endpoints.remember(self.instance, stream.endpoint)
        self._connected = True
        self._stream = stream
        self._stream_changed(+1)
        t = self._d.tuning
        buffer: BoundedBuffer[Notification | FediverseError] = BoundedBuffer(
            max_items=t.stream_buffer, max_bytes=t.stream_buffer_bytes
        )
        self._buffer = buffer
        pump = asyncio.create_task(self._pump(stream, buffer), name=f"stream-pump-{self.account.id}")
        try:
            await self._catch_up()
            while True:
                await self._delivery.wait_for_capacity()
                item = await buffer.get()
                if isinstance(item, FediverseError):
                    raise item
                self._hand_over([item], live=True)
        finally:
            self._stream = None
            self._buffer = None
            self._stream_changed(-1)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            await stream.aclose()

    @staticmethod
    async def _pump(stream: NotificationStream, buffer: BoundedBuffer[Notification | FediverseError]) -> None:
        """Move stream notifications into the bounded buffer; while it is full, the stream is not read.

        Whatever ends the stream reaches the relay loop as a FediverseError (reconnect and catch up),
        even a failure nobody foresaw: a pump that died silently would leave the loop waiting forever.
        """
        try:
            async for notification in stream:
                await buffer.put(notification, notification.retained_bytes)
        except FediverseError as exc:
            await buffer.put(exc)
            return
        except Exception as exc:
            log.warning("%r failed (%s); reconnecting", stream, type(exc).__name__)
            await buffer.put(BadResponseError("The notification stream failed."))
            return
        await buffer.put(InstanceUnreachableError("The notification stream was closed."))

    def _stream_changed(self, delta: int) -> None:
        if self._d.on_stream_change is not None:
            self._d.on_stream_change(delta)
