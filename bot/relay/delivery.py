"""Delivery of one Matrix user's notifications into their DM room, in order, exactly once.

Account relays `submit` items; one worker per user sends them. A single waiting notification goes out on
its own; when several are waiting (a burst, a catch-up, or the homeserver rate-limiting us) they are
grouped and packed (`grouping`) into as few messages as possible, never dropping one.

Under the homeserver's rate limit nothing waits artificially: messages go out as fast as it accepts them.
When it answers 429, the messages it refused are taken back out of the outbox (`_withdraw`: a 429 on a
message's first attempts means it never reached the room) and their notifications go back to the head
of the queue. The next send is composed when the sender gives this user its turn, which is the moment
the server's `retry_after_ms` allows (`MatrixSender.send_relay`), and it folds in everything waiting then
(as much as fits in `max_message_bytes`; the rest goes next). Messages that may have reached the room
(an earlier attempt failed otherwise, or a row left by an earlier run) are never re-composed.

Exactly once: a batch's messages are written to the outbox (with the account cursors they complete) in one
transaction BEFORE sending; each is sent with a transaction id derived from the notifications it covers;
then, in one transaction, the row is deleted and its cursors are committed. After a crash the manager
re-sends the outbox rows first, with the same transaction ids, so the homeserver drops any duplicate.
Send failures are retried with backoff and block later messages (order is kept, nothing is skipped),
except permanent ones (`is_permanent_send_failure`): a message always goes to the user's current DM
room (re-targeted, same transaction id, when the DM changed; held while there is none), and one the
current room keeps refusing (too large; or forbidden after `forbidden_retries` looks) is logged,
counted and dropped so the queue moves on.

Hand-off mode (`sender` None, a relay worker of a split deployment): a batch is done once its outbox rows
are written; the Matrix process sends them. A write refused because this worker lost an account's lease
(`LeaseLost`) waits and is tried again; the lease keeper meanwhile stops that account, which drops its
items (`forget`).

The queue is bounded in count and bytes: relays wait for `wait_for_capacity` before handing over more (at
most one page per account beyond `max_pending` / `max_pending_bytes`), so a flood stays on the instance,
not in memory. Formatting a batch runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from bot.errors import new_reference
from bot.fediverse.models import Notification
from bot.matrix.errors import MatrixRateLimited, is_permanent_send_failure, is_room_refusal
from bot.matrix.types import OutgoingNotice, RoomId
from bot.observability.metrics import Metrics
from bot.relay.backoff import Backoff
from bot.relay.delivery_store import DeliveryStorage, LeaseLost
from bot.relay.event_targets import target_of
from bot.relay.format import Message
from bot.relay.grouping import Pending, group_notifications, pack_messages
from bot.relay.ids import is_newer, max_id
from bot.relay.outbox_writer import OutboxDraft
from bot.relay.tuning import RelayTuning
from bot.store.outbox import OutboxRecord
from bot.store.records import AccountId

if TYPE_CHECKING:
    from bot.matrix.types import EventId

__all__ = ["DeliveryItem", "MatrixSender", "UserDelivery", "txn_id_for"]

log = logging.getLogger(__name__)


RoomCheck = Callable[[str, str], Awaitable[bool]]
"""(matrix user id, room id) → is the room still that user's private DM? Asked before each send."""


class MatrixSender(Protocol):
    """What the relay needs from the Matrix adapter."""

    @property
    def rate_limited(self) -> bool: ...

    async def send_relay(
        self, key: str, compose: Callable[[], Awaitable[OutgoingNotice | None]]
    ) -> EventId | None:
        """Send what `compose` returns when the limiter lets it go, after waiting command replies.

        Raises MatrixRateLimited (not retried) when the homeserver refuses it."""
        ...


@dataclass(frozen=True)
class DeliveryItem:
    """One notification handed to delivery. `relay` False: filtered out, it only moves the cursor."""

    account_id: AccountId
    id: str
    type: str
    notification: Notification = field(repr=False)
    instance_display: str
    account_label: str | None
    relay: bool = True
    live: bool = False  # came from the stream: created→sent latency is meaningful
    created_at: datetime | None = None
    size: int = 0  # bytes `notification` holds in memory (counts against `max_pending_bytes`)


@dataclass
class _Prepared:
    """An outbox row waiting to be sent (or re-sent after a restart)."""

    record: OutboxRecord
    items: tuple[DeliveryItem, ...] = ()  # for metrics; empty for rows found at start
    refusals: int = 0  # 403/404 from the room that is still the user's DM
    batch: tuple[DeliveryItem, ...] = ()  # every item of the batch this row came from (all its rows share it)
    first_of_batch: bool = False
    unsent: bool = False  # certainly not in the room: made here, and every attempt so far was a 429


def txn_id_for(pairs: Sequence[tuple[AccountId, str]]) -> str:
    """Matrix transaction id for a message covering these (account, notification id) pairs."""
    if len(pairs) == 1:
        account_id, notification_id = pairs[0]
        return f"gts.{account_id}.{notification_id}"[:128]
    text = "\n".join(f"{a}:{n}" for a, n in sorted(pairs))
    return "gts.g." + hashlib.sha256(text.encode()).hexdigest()[:40]


class UserDelivery:
    """The ordered delivery queue of one Matrix user (one DM room)."""

    def __init__(
        self,
        matrix_user_id: str,
        *,
        store: DeliveryStorage,
        sender: MatrixSender | None,
        tuning: RelayTuning,
        metrics: Metrics | None,
        rng: random.Random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        room_check: RoomCheck | None = None,
    ) -> None:
        self.matrix_user_id = matrix_user_id
        self._room_check = room_check
        self._store = store
        self._sender = sender
        self._tuning = tuning
        self._metrics = metrics
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._pending: list[DeliveryItem] = []
        self._pending_bytes = 0
        self._prepared: deque[_Prepared] = deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()  # set when the pending queue shrank below max_pending
        self._drained = asyncio.Event()  # set when nothing is pending or prepared
        self._room_changed = asyncio.Event()
        self._fresh_room: str | None = None  # read by the last outbox write; spares `_aim` a read once
        self._preparing = asyncio.Lock()
        self._after_turn: Callable[[], Awaitable[None]] | None = None  # what `_compose` could not do
        self._send_backoff = Backoff(base=tuning.send_retry_base, cap=tuning.send_retry_cap, rng=rng)
        self.relays_waiting = 0  # relays inside wait_for_capacity now

    # -- producers --------------------------------------------------------------------------------

    def submit(self, items: Sequence[DeliveryItem]) -> None:
        if items:
            self._pending.extend(items)
            self._pending_bytes += sum(item.size for item in items)
            self._wake.set()

    def load_outbox(self, records: Sequence[OutboxRecord]) -> None:
        """Rows left by an earlier run: sent before anything else, in their order."""
        self._prepared.extend(_Prepared(r) for r in records)
        if records:
            self._wake.set()

    async def forget(self, account_id: AccountId) -> None:
        """Drop the account's items not yet in the outbox (its relay restarts from the stored cursor)."""
        async with self._preparing:
            self._set_pending([i for i in self._pending if i.account_id != account_id])

    async def drop_pending(self) -> None:
        """Drop every item not yet in the outbox (the user's relays are stopped; cursors stay behind)."""
        async with self._preparing:
            self._set_pending([])

    def _set_pending(self, items: list[DeliveryItem]) -> None:
        self._pending = items
        self._pending_bytes = sum(item.size for item in items)
        self._shrunk()

    @property
    def full(self) -> bool:
        t = self._tuning
        return len(self._pending) >= t.max_pending or self._pending_bytes >= t.max_pending_bytes

    @property
    def pending_bytes(self) -> int:
        """What the notifications waiting to be prepared hold in memory."""
        return self._pending_bytes

    async def wait_for_capacity(self) -> None:
        """Back-pressure: return once fewer than `max_pending` items wait to be prepared."""
        while self.full:
            self._space.clear()
            self.relays_waiting += 1
            try:
                await self._space.wait()
            finally:
                self.relays_waiting -= 1

    async def wait_drained(self) -> None:
        """Return once everything handed over has been delivered (or dropped)."""
        while self._pending or self._prepared:
            self._drained.clear()
            await self._drained.wait()

    def _shrunk(self) -> None:
        if not self.full:
            self._space.set()
        if not self._pending and not self._prepared:
            self._drained.set()

    def room_changed(self) -> None:
        """The user's DM room was (re)recorded or dropped: look at it again now."""
        self._fresh_room = None
        self._room_changed.set()

    def inflight_cursor(self, account_id: AccountId) -> str | None:
        """The newest cursor of this account in outbox rows not yet committed."""
        return max_id(p.record.cursors[account_id] for p in self._prepared if account_id in p.record.cursors)

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._prepared)

    # -- the worker ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self._prepared:
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._sender is None or not self._sender.rate_limited:
                    # Sends flow: prepare now, outside the sender's turn, so the database work does not
                    # hold up other users' sends. While blocked, `_compose` prepares in the turn.
                    if not await self._guard(self._prepare_or_wait):
                        continue
                    if not self._prepared:
                        continue
            if self._sender is None:
                self._handed_off()
                continue
            await self._deliver_next()

    def _handed_off(self) -> None:
        """Hand-off mode: the rows are in the outbox, for the Matrix process to send."""
        while self._prepared:
            self._count_relayed(self._prepared.popleft())
        self._shrunk()

    async def _deliver_next(self) -> None:
        assert self._sender is not None  # hand-off mode never gets here
        head = self._prepared[0] if self._prepared else None
        if not await self._guard(lambda: self._aim(head)):
            return
        failure: Exception | None = None
        sent: str | None = None
        try:
            sent = await self._sender.send_relay(self.matrix_user_id, self._compose)
        except asyncio.CancelledError:
            raise
        except MatrixRateLimited:
            await self._guard(self._withdraw)
            return
        except Exception as exc:
            if not is_permanent_send_failure(exc):
                await self._transient_failure(self._prepared[0])
                return
            failure = exc
        if failure is not None:
            refused, failed = failure, self._prepared[0]
            await self._guard(lambda: self._permanent_failure(failed, refused))
            return
        if sent is None:
            after, self._after_turn = self._after_turn, None
            if after is not None:
                await after()
            return
        head = self._prepared[0]
        self._send_backoff.reset()
        sent_as = sent
        while not await self._guard(lambda: self._commit(head, sent_as=sent_as)):
            pass
        self._pop_head()
        self._count_relayed(head)

    async def _compose(self) -> OutgoingNotice | None:
        """The sender's turn has come (the limiter allows a send now): the head message, prepared from
        everything waiting when there is none. None sends nothing; `_after_turn` says what to do then."""
        if not self._prepared:
            try:
                if not await self._prepare_batch():
                    self._after_turn = self._wait_for_room
                    return None
            except Exception:
                ref = new_reference()
                log.exception("relay delivery for %s failed (ref %s); retrying", self.matrix_user_id, ref)
                self._after_turn = self._set_back
                return None
            if not self._prepared:
                return None
        head = self._prepared[0]
        r = head.record
        covers = tuple(i.id for i in head.items)
        return OutgoingNotice(RoomId(r.room_id), r.body, r.html, r.txn_id, covers=covers)

    async def _set_back(self) -> None:
        await self._sleep(self._send_backoff.next_delay())

    async def _withdraw(self) -> None:
        """The homeserver refused the head with 429: take every prepared message back out of the outbox
        and return its notifications to the head of the queue, so the send the limiter allows next folds
        them with what arrives meanwhile. Only when all of them certainly never reached the room and the
        head starts its batch (a batch's cursors ride on its last message: it goes back whole)."""
        async with self._preparing:
            rows = list(self._prepared)
            if not rows or not rows[0].first_of_batch or not all(p.unsent for p in rows):
                return
            await self._store.withdraw([p.record for p in rows])
            self._prepared.clear()
            back = [item for p in rows if p.first_of_batch for item in p.batch]
            self._set_pending(back + self._pending)

    async def _aim(self, head: _Prepared | None) -> bool:
        """Point the message at the user's current DM room; False (after a wait) when there is none."""
        self._room_changed.clear()
        room, self._fresh_room = self._fresh_room, None
        if room is None:
            room = await self._store.current_room()
        if room is None:
            log.info("no DM room with %s now; holding its relay messages", self.matrix_user_id)
            await self._wait_for_room()
            return False
        if self._room_check is not None and not await self._room_check(self.matrix_user_id, room):
            # Someone else could read it now: hold the messages until the user has a private DM again.
            log.warning("the DM of %s is not private any more; holding its messages", self.matrix_user_id)
            await self._wait_for_room()
            return False
        if head is not None and room != head.record.room_id:
            log.info("the DM room of %s changed; sending its relay messages there", self.matrix_user_id)
            head.record = await self._store.retarget(head.record, room)
            head.refusals = 0
        return True

    async def _transient_failure(self, head: _Prepared) -> None:
        head.unsent = False  # the homeserver may have stored it before the failure
        ref = new_reference()
        log.exception("relay delivery for %s failed (ref %s); retrying", self.matrix_user_id, ref)
        if self._send_backoff.failures == 0:
            self._count_failed(head)
        await self._sleep(self._send_backoff.next_delay())

    async def _permanent_failure(self, head: _Prepared, exc: Exception) -> None:
        """Sending this message to its room cannot work. Another (or a future) DM room may: the next
        `_aim` re-targets or waits. The same room refusing it: look again a few times (the bot may just
        have been kicked and the DM record not updated yet), then give the message up."""
        self._room_changed.clear()
        room = await self._store.current_room()
        if room != head.record.room_id:
            return
        if is_room_refusal(exc) and head.refusals < self._tuning.forbidden_retries:
            head.refusals += 1
            log.info("the DM of %s refused a relay message (%s); looking again", self.matrix_user_id, exc)
            await self._wait_for_room()
            return
        ref = new_reference()
        log.error(
            "a relay message for %s cannot be delivered (%s, ref %s); dropped", self.matrix_user_id, exc, ref
        )
        self._count_failed(head)
        await self._commit(head)
        self._pop_head()

    def _pop_head(self) -> None:
        self._prepared.popleft()
        self._shrunk()

    async def _guard(self, step: Callable[[], Awaitable[bool | None]]) -> bool:
        """Run a step; on an error log it, back off, and return False so the step is tried again."""
        try:
            return (await step()) is not False
        except asyncio.CancelledError:
            raise
        except Exception:
            ref = new_reference()
            log.exception("relay delivery for %s failed (ref %s); retrying", self.matrix_user_id, ref)
            await self._sleep(self._send_backoff.next_delay())
            return False

    async def _prepare_or_wait(self) -> bool:
        if await self._prepare_batch():
            return True
        await self._wait_for_room()
        return False

    async def _prepare_batch(self) -> bool:
        """Write the head of the queue to the outbox as messages; False when there is no DM room."""
        self._room_changed.clear()
        async with self._preparing:
            batch = self._pending[: self._tuning.max_batch]
            # Formatting is bounded per notification but a batch is many: keep it off the event loop.
            messages = await asyncio.to_thread(self._messages, [i for i in batch if i.relay])
            try:
                prepared = await self._write_batch(batch, messages)
            except LeaseLost as lost:
                log.info("%s; holding the batch until the account is stopped here", lost)
                prepared = None
                lease_lost = True
            else:
                lease_lost = False
            if prepared is not None:
                taken = {id(item) for item in batch}
                self._prepared.extend(prepared)
                self._set_pending([i for i in self._pending if id(i) not in taken])
                return True
        if not lease_lost:
            log.info("no DM room with %s yet; keeping its notifications queued", self.matrix_user_id)
        return False

    async def _wait_for_room(self) -> None:
        nap = asyncio.ensure_future(self._sleep(self._tuning.no_room_retry))
        room = asyncio.ensure_future(self._room_changed.wait())
        try:
            await asyncio.wait({nap, room}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            room.cancel()

    async def _write_batch(
        self, batch: list[DeliveryItem], messages: list[Message]
    ) -> list[_Prepared] | None:
        """Write the batch's messages to the outbox (one transaction); None when there is no DM room."""
        cursors: dict[AccountId, str] = {}
        for item in batch:
            if is_newer(item.id, cursors.get(item.account_id)):
                cursors[item.account_id] = item.id
        relayed = [i for i in batch if i.relay]
        drafts: list[OutboxDraft] = []
        covered_by_draft: list[tuple[DeliveryItem, ...]] = []
        for message in messages:
            covers = set(message.covers)
            covered = tuple(i for i in relayed if i.id in covers)
            txn_id = txn_id_for([(i.account_id, i.id) for i in covered])
            shows = target_of(covered[0].account_id, covered[0].notification) if len(covered) == 1 else None
            drafts.append(OutboxDraft(txn_id=txn_id, body=message.plain, html=message.html, shows=shows))
            covered_by_draft.append(covered)
        records = await self._store.write_batch(drafts, cursors)
        if records is None:
            return None
        if records:
            self._fresh_room = records[0].room_id
        whole = tuple(batch)
        return [
            _Prepared(record, covered, batch=whole, first_of_batch=index == 0, unsent=True)
            for index, (record, covered) in enumerate(zip(records, covered_by_draft, strict=True))
        ]

    def _messages(self, items: list[DeliveryItem]) -> list[Message]:
        if not items:
            return []
        pending = [Pending(i.notification, i.instance_display, i.account_label) for i in items]
        return pack_messages(group_notifications(pending), max_bytes=self._tuning.max_message_bytes)

    async def _commit(self, prepared: _Prepared, *, sent_as: str | None = None) -> None:
        await self._store.commit(prepared.record, sent_as=sent_as)

    def _count_failed(self, prepared: _Prepared) -> None:
        if self._metrics is not None:
            for item in prepared.items:
                self._metrics.notification_failed(item.type)

    def _count_relayed(self, prepared: _Prepared) -> None:
        if self._metrics is None:
            return
        now = self._wall_clock()
        for item in prepared.items:
            latency = None
            if item.live and item.created_at is not None:
                latency = now - item.created_at.astimezone(UTC).timestamp()
            self._metrics.notification_relayed(item.type, latency)
