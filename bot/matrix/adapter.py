"""The bot's Matrix adapter: matrix-nio wrapped once, typed values and exceptions out.

    adapter = MatrixAdapter(creds, session_store, trust_policy=TrustPolicy.TOFU)
    await adapter.start()                  # restore or log in, upload keys
    task = asyncio.create_task(adapter.run(handler))
    await adapter.send_notice(room_id, "plain", "<b>html</b>")
    await adapter.stop()                   # ends run(), closes the HTTP session

Sync semantics:
- first start (no stored sync token): one initial sync records "now"; old history is NOT delivered (only
  invites still pending, which are current state rather than history);
- later starts: a full-state sync from the stored token delivers what arrived while the bot was down,
  including, oldest first, what a limited timeline left out (up to gaps.MAX_GAP_EVENTS per room);
- the token is stored only after the handler has returned for every event of that sync, so a crash
  re-delivers rather than loses events (the handler should be idempotent; Invite may repeat after a restart).
A handler exception is logged and the event skipped: one bad event must not stop the bot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import nio

from bot.matrix import dm_rules, roomstate
from bot.matrix.errors import (
    MatrixError,
    MatrixForbidden,
    MatrixLoginError,
    MatrixRateLimited,
    MatrixRequestError,
    MatrixUnknownToken,
)
from bot.matrix.events import events_from_sync
from bot.matrix.gaps import Gaps, fetch_gaps
from bot.matrix.nio_client import FIRST_SYNC_FILTER, SYNC_FILTER, call
from bot.matrix.sender import (
    FairSender,
    Priority,
    RateLimitObserver,
    RateLimitTracker,
    retry_delay,
    retry_rate_limited,
)
from bot.matrix.session import Credentials, SessionManager
from bot.matrix.trust import apply_trust
from bot.matrix.types import (
    BotEvent,
    DeviceId,
    EventHandler,
    EventId,
    OutgoingNotice,
    RoomId,
    SessionStore,
    TrustPolicy,
    UserId,
)

log = logging.getLogger(__name__)

_MAX_BACKOFF = 60.0


def notice_content(body: str, html: str) -> dict[str, Any]:
    """An m.notice event's content. `m.mentions` is always present and empty: the bot relays text
    written elsewhere, and nothing in it may ping anyone (with `m.mentions`, clients and servers no
    longer look for names or @room in the body)."""
    return {
        "msgtype": "m.notice",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": html,
        "m.mentions": {},
    }


class MatrixAdapter:
    def __init__(
        self,
        creds: Credentials,
        session_store: SessionStore,
        *,
        trust_policy: TrustPolicy = TrustPolicy.TOFU,
        encrypt_new_dms: bool = True,
        sync_timeout_ms: int = 30_000,
    ) -> None:
        self._creds = creds
        self._sessions = SessionManager(creds, session_store)
        self._session_store = session_store
        self._trust = trust_policy
        self._encrypt_new_dms = encrypt_new_dms
        self._sync_timeout_ms = sync_timeout_ms
        self._client: Any = None
        self._device_id: DeviceId | None = None
        self._sync_token: str | None = None
        self._fresh_client = False
        self._keys_lock = asyncio.Lock()
        self.rate_limits = RateLimitTracker()
        self._sender = FairSender(self.rate_limits)
        self._stop_requested = False
        self._sync_task: asyncio.Task[tuple[Any, Gaps]] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.logins = 0
        self._sync_observers: list[Callable[[], None]] = []
        self._sent_observers: list[Callable[[], None]] = []

    # ---- identity and state ----

    @property
    def user_id(self) -> UserId:
        return self._creds.user_id

    @property
    def device_id(self) -> DeviceId:
        if self._device_id is None:
            raise MatrixError("the adapter is not started")
        return self._device_id

    @property
    def sync_token(self) -> str | None:
        return self._sync_token

    @property
    def rate_limited(self) -> bool:
        """True while the homeserver is rate-limiting the bot's sends."""
        return self.rate_limits.blocked

    @property
    def rate_limit_hits(self) -> int:
        """How many 429 answers the adapter has seen (and handled) so far."""
        return self.rate_limits.hits

    @property
    def queued_sends(self) -> int:
        return self._sender.queued

    def on_rate_limit(self, observer: RateLimitObserver) -> None:
        """Call `observer` when sends become blocked by a 429 and when they flow again."""
        self.rate_limits.subscribe(observer)

    def _nio(self) -> Any:
        if self._client is None:
            raise MatrixError("the adapter is not started")
        return self._client

    # ---- lifecycle ----

    async def start(self) -> None:
        """Restore the stored session (or log in once), then upload E2EE keys if needed."""
        session = await self._sessions.open()
        self._client, self._device_id, self._sync_token = (
            session.client,
            session.device_id,
            session.sync_token,
        )
        self.logins += session.logins
        await self._maintain_keys()

    async def _relogin(self) -> None:
        if self._creds.password is None:
            raise MatrixLoginError("the access token was rejected and no password is configured")
        old = self._client
        session = await self._sessions.login()
        self._client, self._device_id = session.client, session.device_id
        self.logins += 1
        self._fresh_client = True
        if old is not None:
            await old.close()
        await self._maintain_keys()

    async def stop(self) -> None:
        """Stop `run()` after the event being handled (if any), then close the HTTP session."""
        self._stop_requested = True
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_task.cancel()
        await self._idle.wait()
        if self._client is not None:
            await self._client.close()

    # ---- sync ----

    def on_sent(self, observer: Callable[[], None]) -> None:
        """Call `observer` after every message the homeserver accepted (metrics use it)."""
        self._sent_observers.append(observer)

    def on_sync(self, observer: Callable[[], None]) -> None:
        """Call `observer` after every sync whose events were handled (health checks use it)."""
        self._sync_observers.append(observer)

    async def run(self, handler: EventHandler) -> None:
        """Sync until `stop()`, handing each event to `handler` (awaited) before storing the sync token."""
        self._nio()
        if not self._idle.is_set():
            raise MatrixError("run() is already running")
        self._idle.clear()
        self._stop_requested = False
        try:
            first_start = self._sync_token is None  # record "now", deliver no history
            catch_up = not first_start  # full state: nio knows no rooms after a restart
            while not self._stop_requested:
                await self._maintain_keys_quietly()
                synced = await self._sync(
                    self._sync_token,
                    0 if first_start or catch_up else self._sync_timeout_ms,
                    FIRST_SYNC_FILTER if first_start else SYNC_FILTER,
                    full_state=catch_up,
                )
                if synced is None:
                    return
                resp, gaps = synced
                events = events_from_sync(
                    resp, self.user_id, self._reason, invites_only=first_start, gaps=gaps, full_state=catch_up
                )
                await self._deliver(handler, events)
                await self._commit(resp)
                first_start = catch_up = False
                for observer in self._sync_observers:
                    observer()
        finally:
            self._idle.set()

    async def _sync(
        self, since: str | None, timeout_ms: int, sync_filter: Mapping[str, Any], *, full_state: bool
    ) -> tuple[Any, Gaps] | None:
        """One sync and its timelines' gaps, retried on 429 / server errors / a rejected token.

        None when stop() interrupted it.
        """
        backoff = 1.0
        while not self._stop_requested:
            client = self._nio()
            # After a new login the new client knows no rooms: ask for their full state once.
            full = full_state or self._fresh_client

            async def one_sync(client: Any = client, full: bool = full) -> tuple[Any, Gaps]:
                # The nio coroutine is made inside the task: a task cancelled before it starts then
                # leaves no never-awaited coroutine behind. The gaps are fetched inside it too, so
                # stop() interrupts them as well.
                request = client.sync(
                    timeout=timeout_ms, sync_filter=dict(sync_filter), since=since, full_state=full
                )
                resp = await call("sync", request)
                return resp, {} if since is None else await fetch_gaps(client, resp, since)

            self._sync_task = asyncio.ensure_future(one_sync())
            try:
                synced = await self._sync_task
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stop_requested and (task is None or task.cancelling() == 0):
                    return None
                raise
            except MatrixRateLimited as e:
                await asyncio.sleep(retry_delay(e.retry_after_ms))
            except MatrixUnknownToken:
                log.warning("the homeserver rejected the bot's access token during sync")
                await self._relogin()
            except MatrixRequestError as e:
                log.warning("sync failed (%s); retrying in %.0f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            else:
                self._fresh_client = False
                return synced
            finally:
                self._sync_task = None
        return None

    async def _deliver(self, handler: EventHandler, events: list[BotEvent]) -> None:
        for event in events:
            try:
                await handler(event)
            except Exception:
                log.exception("event handler failed on %s in %s", type(event).__name__, event.room_id)

    async def _commit(self, resp: Any) -> None:
        token: str = resp.next_batch
        await self._session_store.save_sync_token(token)
        self._sync_token = token

    def _reason(self, event: Any) -> str:
        olm = self._nio().olm
        if olm is None:
            return "missing_room_key"
        session = olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id)
        return "missing_room_key" if session is None else "decryption_failed"

    async def _maintain_keys(self) -> None:
        """Upload our keys, query changed devices, claim one-time keys, flush to-device messages."""
        async with self._keys_lock:
            client = self._nio()
            if client.should_upload_keys:
                await call("keys upload", client.keys_upload())
            if client.should_query_keys:
                await call("keys query", client.keys_query())
            if client.should_claim_keys:
                await call("keys claim", client.keys_claim(client.get_users_for_key_claiming()))
            for resp in await client.send_to_device_messages():
                if isinstance(resp, nio.ErrorResponse):
                    log.warning("to-device message failed: %s", resp.status_code)

    async def _maintain_keys_quietly(self) -> None:
        try:
            await self._maintain_keys()
        except MatrixError as e:
            log.warning("E2EE key maintenance failed, will retry after the next sync: %s", e)

    # ---- sending ----

    async def send_notice(
        self, room_id: RoomId, body: str, html: str, *, txn_id: str | None = None
    ) -> EventId:
        """Send an m.notice (plain body + HTML) after earlier sends to its room; encrypted if the room is.

        It goes ahead of relayed notifications (`Priority.COMMAND`: command replies and other answers);
        rooms take turns (see `sender.FairSender`), so one room's backlog does not hold up another's.
        `txn_id` makes the send idempotent: the same transaction id from this device yields one event.
        On 429 the send waits exactly as the server asks and retries; other sends wait meanwhile.
        """
        content = notice_content(body, html)
        txn = txn_id or uuid.uuid4().hex
        event_id = await self._sender.run(
            room_id, lambda: self._send_once(room_id, "m.room.message", content, txn)
        )
        self._sent()
        return event_id

    async def send_relay(
        self, key: str, compose: Callable[[], Awaitable[OutgoingNotice | None]]
    ) -> EventId | None:
        """Send a relayed notice after every waiting command reply, composed when its turn comes.

        `compose` runs at the moment the homeserver's limiter lets the send go, so it can fold in
        everything that is waiting then; None from it sends nothing (and returns None). A 429 is not
        retried here: MatrixRateLimited reaches the caller, and its next `send_relay` waits until the
        server's `retry_after_ms` has passed. `key` (the user) shares turns fairly with other relays.
        """

        async def once() -> EventId | None:
            notice = await compose()
            if notice is None:
                return None
            content = notice_content(notice.body, notice.html)
            return await self._send_once(notice.room_id, "m.room.message", content, notice.txn_id)

        event_id = await self._sender.run(key, once, priority=Priority.RELAY, retry=False)
        if event_id is not None:
            self._sent()
        return event_id

    def _sent(self) -> None:
        for observer in self._sent_observers:
            observer()

    async def _send_once(
        self, room_id: RoomId, event_type: str, content: dict[str, Any], txn: str
    ) -> EventId:
        client = self._nio()
        room = await roomstate.room_for_send(client, room_id)
        if room.encrypted:
            async with self._keys_lock:
                if client.should_query_keys:
                    await call("keys query", client.keys_query())
                apply_trust(client, list(room.users), self._trust)
        resp = await call(
            "send", client.room_send(room_id, event_type, content, tx_id=txn, ignore_unverified_devices=True)
        )
        return EventId(str(resp.event_id))

    async def _room_state(self, room_id: RoomId) -> list[Mapping[str, Any]]:
        return await roomstate.room_state(self._nio(), room_id)

    # ---- rooms ----

    async def join(self, room_id: RoomId) -> RoomId:
        resp = await retry_rate_limited(lambda: call("join", self._nio().join(room_id)), self.rate_limits)
        return RoomId(str(resp.room_id))

    async def leave(self, room_id: RoomId) -> None:
        await retry_rate_limited(lambda: call("leave", self._nio().room_leave(room_id)), self.rate_limits)

    async def create_dm(self, user_id: UserId) -> RoomId:
        """Create a private direct chat with `user_id` and invite them (encrypted if the adapter says so)."""
        args = dm_rules.dm_create_args(user_id, encrypted=self._encrypt_new_dms)
        resp = await retry_rate_limited(
            lambda: call(
                "create room",
                self._nio().room_create(
                    visibility=nio.RoomVisibility.private, preset=nio.RoomPreset.trusted_private_chat, **args
                ),
            ),
            self.rate_limits,
        )
        return RoomId(str(resp.room_id))

    async def is_one_to_one(self, room_id: RoomId, user_id: UserId) -> bool:
        """True when the room is a private 1:1 chat with `user_id` (`is_private_dm`; asks the server).

        The synced members answer "no" without a download when they include anyone else (a busy group
        room holds thousands); only a room whose synced members are at most the two, or one the sync has
        not shown yet, has its state fetched, and such a room has little state. (A room just created may
        be synced before its invite: fewer members than two proves nothing, so the server is asked.)
        """
        known = self._nio().rooms.get(room_id)
        if known is not None and set(known.users) - {self.user_id, user_id}:
            return False
        try:
            state = await self._room_state(room_id)
        except MatrixForbidden:
            return False
        return dm_rules.is_private_dm(state, self.user_id, user_id)

    async def redact(self, room_id: RoomId, event_id: EventId, reason: str | None = None) -> bool:
        """Redact an event; False when the bot lacks the power to (M_FORBIDDEN). Retries on 429.

        Trying is the check: asking first would mean downloading the room's state (power levels,
        creators), which in a big room is large, to learn what the answer to this one request says.
        """
        txn = uuid.uuid4().hex
        try:
            await retry_rate_limited(
                lambda: call("redact", self._nio().room_redact(room_id, event_id, reason, tx_id=txn)),
                self.rate_limits,
            )
        except MatrixForbidden:
            return False
        return True
