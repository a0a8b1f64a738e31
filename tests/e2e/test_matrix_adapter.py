"""The Matrix adapter against a real Synapse: sessions, sync semantics, E2EE, rate limits, rooms."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import nio
import pytest

from bot.matrix.adapter import MatrixAdapter
from bot.matrix.errors import MatrixRateLimited, MatrixStoreError
from bot.matrix.session import Credentials
from bot.matrix.types import (
    BotEvent,
    DeviceId,
    EventId,
    IncomingMessage,
    Invite,
    MemberLeft,
    OutgoingNotice,
    RateLimitState,
    RoomId,
    StoredSession,
    TrustPolicy,
    UndecryptableMessage,
    UserId,
)
from tests.e2e.conftest import MakeHuman
from tests.e2e.synapse import Synapse
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

E = TypeVar("E")


class MemorySessionStore:
    """SessionStore kept in memory; survives adapter "restarts" because tests reuse the object."""

    def __init__(self) -> None:
        self.session: StoredSession | None = None
        self.saves = 0

    async def load(self) -> StoredSession | None:
        return self.session

    async def save(self, user_id: UserId, device_id: DeviceId, access_token: str) -> None:
        sync_token = self.session.sync_token if self.session else None
        self.session = StoredSession(user_id, device_id, access_token, sync_token)
        self.saves += 1

    async def save_sync_token(self, token: str) -> None:
        assert self.session is not None
        self.session = replace(self.session, sync_token=token)


@dataclass
class BotAccount:
    user_id: UserId
    password: str = field(repr=False)
    store_dir: Path
    sessions: MemorySessionStore = field(default_factory=MemorySessionStore)
    pickle_key: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)

    def adapter(self, synapse: Synapse, *, password: bool = True, **kwargs: Any) -> MatrixAdapter:
        creds = Credentials(
            homeserver=synapse.base_url,
            user_id=self.user_id,
            store_dir=self.store_dir,
            password=self.password if password else None,
            pickle_key=self.pickle_key,
        )
        return MatrixAdapter(creds, self.sessions, **kwargs)


@pytest.fixture
async def bot(synapse: Synapse, tmp_path: Path) -> BotAccount:
    password = secrets.token_hex(12)
    user_id = await synapse.create_account(f"bot-{secrets.token_hex(4)}", password)
    return BotAccount(UserId(user_id), password, tmp_path / "nio-store")


class Recorder:
    """The sync handler: records every event, joins rooms it is invited to (as the real bot would)."""

    def __init__(self, adapter: MatrixAdapter, *, auto_join: bool = True) -> None:
        self.adapter = adapter
        self.auto_join = auto_join
        self.seen: list[BotEvent] = []
        self._queue: asyncio.Queue[BotEvent] = asyncio.Queue()

    async def __call__(self, event: BotEvent) -> None:
        self.seen.append(event)
        if self.auto_join and isinstance(event, Invite):
            await self.adapter.join(event.room_id)
        await self._queue.put(event)

    async def next(
        self, kind: type[E], where: Callable[[E], bool] = lambda e: True, timeout: float = 60.0
    ) -> E:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self._queue.get()
                    if isinstance(event, kind) and where(event):
                        return event
        except TimeoutError:
            raise AssertionError(f"no {kind.__name__} within {timeout} s; seen: {self.seen}") from None

    def messages(self) -> list[str]:
        return [e.body for e in self.seen if isinstance(e, IncomingMessage)]


@asynccontextmanager
async def running(adapter: MatrixAdapter, handler: Recorder) -> AsyncIterator[None]:
    task = asyncio.create_task(adapter.run(handler))
    try:
        await wait_until(lambda: adapter.sync_token is not None or task.done(), what="the first sync")
        if task.done():
            task.result()
        yield
    finally:
        await adapter.stop()
        await task


async def test_first_start_ignores_history_restart_restores_session_and_catches_up(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    alice = await make_human("alice")
    first = bot.adapter(synapse)
    await first.start()
    assert first.logins == 1
    device = first.device_id
    room = RoomId(await alice.create_room([bot.user_id], encrypted=True))
    await first.join(room)
    await alice.wait_member(room, bot.user_id)
    await alice.send_text(room, "old history")

    rec = Recorder(first)
    async with running(first, rec):
        await alice.send_text(room, "after start")
        msg = await rec.next(IncomingMessage)
        assert (msg.body, msg.is_encrypted, msg.sender, msg.room_id) == (
            "after start",
            True,
            alice.user_id,
            room,
        )
    assert rec.messages() == ["after start"]  # the first sync acted on no history

    await alice.send_text(room, "while down 1")
    await alice.send_text(room, "while down 2")

    second = bot.adapter(synapse)
    await second.start()
    assert second.logins == 0
    assert second.device_id == device
    assert await synapse.devices(bot.user_id) == [device]
    rec2 = Recorder(second)
    async with running(second, rec2):
        await rec2.next(IncomingMessage, lambda m: m.body == "while down 2")
        await alice.send_text(room, "marker")
        await rec2.next(IncomingMessage, lambda m: m.body == "marker")
    assert rec2.messages() == ["while down 1", "while down 2", "marker"]
    assert all(isinstance(e, IncomingMessage) and e.is_encrypted for e in rec2.seen)

    third = bot.adapter(synapse)
    await third.start()
    rec3 = Recorder(third)
    async with running(third, rec3):
        await alice.send_text(room, "marker 2")
        await rec3.next(IncomingMessage, lambda m: m.body == "marker 2")
    assert rec3.messages() == ["marker 2"]  # nothing delivered twice
    assert third.logins == 0
    assert await synapse.devices(bot.user_id) == [device]


async def test_send_notice_in_encrypted_dm_before_join_and_in_plain_dm(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    bob = await make_human("bob")
    adapter = bot.adapter(synapse)
    await adapter.start()
    rec = Recorder(adapter)
    async with running(adapter, rec):
        dm = await adapter.create_dm(UserId(bob.user_id))
        assert await adapter.is_one_to_one(dm, UserId(bob.user_id))  # bob is invited: counts as member
        first = await adapter.send_notice(dm, "hello bob", "<b>hello</b> bob", txn_id="txn-hello")
        again = await adapter.send_notice(dm, "hello bob", "<b>hello</b> bob", txn_id="txn-hello")
        assert again == first  # same device + same transaction id: one event

        assert await bob.accept_invite() == dm
        msg = await bob.wait_message(dm, bot.user_id)
        assert isinstance(msg, nio.RoomMessageNotice), msg
        assert msg.decrypted
        assert (msg.body, msg.formatted_body, msg.event_id) == ("hello bob", "<b>hello</b> bob", first)
        await adapter.send_notice(dm, "after hello", "after hello")  # a later, distinct message...
        later = await bob.wait_message(dm, bot.user_id)
        assert later.body == "after hello"  # ...is the next one bob sees: no second hello before it

        plain = RoomId(await bob.create_dm(bot.user_id, encrypted=False))
        invite = await rec.next(Invite, lambda i: i.room_id == plain)
        assert (invite.is_direct, invite.inviter) == (True, bob.user_id)
        await bob.wait_member(plain, bot.user_id)
        await adapter.send_notice(plain, "plain text", "<i>plain</i> text")
        msg = await bob.wait_message(plain, bot.user_id)
        assert isinstance(msg, nio.RoomMessageNotice)
        assert not msg.decrypted
        assert (msg.body, msg.formatted_body) == ("plain text", "<i>plain</i> text")
        assert await adapter.is_one_to_one(plain, UserId(bob.user_id))

        carol = await make_human("carol")
        await bob.invite(dm, carol.user_id)
        assert not await adapter.is_one_to_one(dm, UserId(bob.user_id))  # an invited third person counts
        await carol.accept_invite()
        assert not await adapter.is_one_to_one(dm, UserId(bob.user_id))
        assert not await adapter.is_one_to_one(dm, UserId(carol.user_id))


async def test_a_dm_the_bot_creates_shows_history_only_from_the_invite_on(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    """trusted_private_chat alone makes history "shared"; the server must hold "invited" for the DM."""
    ivan = await make_human("ivan")
    adapter = bot.adapter(synapse)
    await adapter.start()
    async with running(adapter, Recorder(adapter)):
        dm = await adapter.create_dm(UserId(ivan.user_id))
    state = await synapse.admin_request("GET", f"/_synapse/admin/v1/rooms/{urllib.parse.quote(dm)}/state")
    [history] = [e for e in state["state"] if e["type"] == "m.room.history_visibility"]
    assert history["content"] == {"history_visibility": "invited"}
    [join_rules] = [e for e in state["state"] if e["type"] == "m.room.join_rules"]
    assert join_rules["content"] == {"join_rule": "invite"}  # the preset's other choices stay


async def test_incoming_encrypted_undecryptable_invites_and_leaves(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    dave = await make_human("dave")
    adapter = bot.adapter(synapse)
    await adapter.start()
    rec = Recorder(adapter)
    async with running(adapter, rec):
        dm = RoomId(await dave.create_dm(bot.user_id, encrypted=True))
        invite = await rec.next(Invite, lambda i: i.room_id == dm)
        assert (invite.is_direct, invite.inviter) == (True, dave.user_id)
        await dave.wait_member(dm, bot.user_id)

        await dave.send_text(dm, "!gts help")
        msg = await rec.next(IncomingMessage)
        assert (msg.body, msg.msgtype, msg.is_encrypted, msg.formatted_body) == (
            "!gts help",
            "m.text",
            True,
            None,
        )

        withheld = await dave.send_undecryptable(dm, "the bot never gets this key")
        bad = await rec.next(UndecryptableMessage)
        assert (bad.event_id, bad.sender, bad.room_id, bad.reason) == (
            withheld,
            dave.user_id,
            dm,
            "missing_room_key",
        )

        group = RoomId(await dave.create_room([bot.user_id]))
        invite = await rec.next(Invite, lambda i: i.room_id == group)
        assert (invite.is_direct, invite.inviter) == (False, dave.user_id)
        await dave.wait_member(group, bot.user_id)
        await dave.client.room_leave(group)
        left = await rec.next(MemberLeft, lambda m: m.room_id == group)
        assert left.user_id == dave.user_id
    assert not any(isinstance(e, IncomingMessage) and e.sender == bot.user_id for e in rec.seen)


async def test_rate_limited_sends_arrive_in_order_and_the_429_is_observed(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    erin = await make_human("erin")
    adapter = bot.adapter(synapse)
    await adapter.start()
    # The bot is not exempt: a tighter-than-default limit (burst 5, 2/s) makes the 429s come sooner and the
    # test faster than Synapse's default (burst 10, 0.2/s), with the same mechanism.
    await synapse.override_ratelimit(bot.user_id, messages_per_second=2, burst_count=5)
    states: list[RateLimitState] = []
    adapter.on_rate_limit(states.append)
    rec = Recorder(adapter)
    async with running(adapter, rec):
        dm = await adapter.create_dm(UserId(erin.user_id))
        await erin.accept_invite()
        await erin.wait_member(dm, bot.user_id)
        bodies = [f"notice {i:02d}" for i in range(15)]
        sent = await asyncio.gather(*(adapter.send_notice(dm, b, f"<p>{b}</p>") for b in bodies))
        received = await erin.messages_from(dm, bot.user_id, 15)
    assert [m.body for m in received] == bodies
    assert [m.event_id for m in received] == list(sent)
    assert all(m.decrypted for m in received)
    assert adapter.rate_limit_hits >= 1  # nio handed the 429 to the adapter instead of hiding it
    assert states[0].blocked
    assert states[0].queued > 0
    assert not states[-1].blocked
    assert not adapter.rate_limited


async def test_a_command_reply_takes_the_next_slot_ahead_of_relays_held_by_a_429(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    hugo = await make_human("hugo")
    adapter = bot.adapter(synapse)
    await adapter.start()
    await synapse.override_ratelimit(bot.user_id, messages_per_second=1, burst_count=3)
    relays = [f"relay {i:02d}" for i in range(8)]
    accepted: list[str] = []

    async def relay_in_order() -> None:  # as the relay's delivery does: a 429 sends it back to the queue
        for body in relays:
            notice = OutgoingNotice(dm, body, f"<p>{body}</p>", f"txn-{body}")

            async def compose(notice: OutgoingNotice = notice) -> OutgoingNotice:
                return notice

            while True:
                try:
                    await adapter.send_relay("@hugo", compose)
                except MatrixRateLimited:
                    continue
                accepted.append(body)
                break

    rec = Recorder(adapter)
    async with running(adapter, rec):
        dm = await adapter.create_dm(UserId(hugo.user_id))
        await hugo.accept_invite()
        await hugo.wait_member(dm, bot.user_id)
        relaying = asyncio.create_task(relay_in_order())
        await wait_until(
            lambda: adapter.rate_limited and adapter.queued_sends >= 1, what="relays held by the limiter"
        )
        before = len(accepted)
        await adapter.send_notice(dm, "status reply", "<p>status reply</p>")
        await relaying
        received = await hugo.messages_from(dm, bot.user_id, len(relays) + 1)
    bodies = [m.body for m in received]
    assert bodies.index("status reply") == before  # the next slot after the 429, ahead of every relay
    assert [b for b in bodies if b != "status reply"] == relays  # in order, once each
    assert before < len(relays)


async def test_redact_needs_power(synapse: Synapse, make_human: MakeHuman, bot: BotAccount) -> None:
    frank = await make_human("frank")
    adapter = bot.adapter(synapse)
    await adapter.start()
    try:
        room = RoomId(await frank.create_room([bot.user_id]))
        await adapter.join(room)
        secret = EventId(await frank.send_text(room, "my token is hunter2"))

        assert await adapter.redact(room, secret, "secret pasted in a shared room") is False

        await frank.set_power(room, bot.user_id, 50)
        assert await adapter.redact(room, secret, "secret pasted in a shared room") is True
        resp = await synapse.client_request(
            frank.access_token, "GET", f"/_matrix/client/v3/rooms/{room}/event/{secret}"
        )
        assert resp.json()["content"] == {}
    finally:
        await adapter.stop()


async def test_rejected_token_logs_in_again_and_keeps_the_sync_position(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    grace = await make_human("grace")
    first = bot.adapter(synapse)
    await first.start()
    room = RoomId(await grace.create_room([bot.user_id]))
    await first.join(room)
    async with running(first, Recorder(first)):
        pass
    stored = bot.sessions.session
    assert stored is not None
    assert stored.sync_token is not None
    resp = await synapse.client_request(stored.access_token, "POST", "/_matrix/client/v3/logout", {})
    assert resp.status_code == 200
    await grace.send_text(room, "sent while the token died")

    second = bot.adapter(synapse)
    await second.start()
    assert second.logins == 1
    assert second.device_id != stored.device_id
    rec = Recorder(second)
    async with running(second, rec):
        await rec.next(IncomingMessage, lambda m: m.body == "sent while the token died")
    assert bot.sessions.session is not None
    assert bot.sessions.session.device_id == second.device_id

    # Without a password there is no way back from a lost E2EE store.
    shutil.rmtree(bot.store_dir)
    third = bot.adapter(synapse, password=False)
    with pytest.raises(MatrixStoreError):
        await third.start()
    await third.stop()


async def test_trust_policy_all_also_sends_encrypted(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    heidi = await make_human("heidi")
    adapter = bot.adapter(synapse, trust_policy=TrustPolicy.ALL)
    await adapter.start()
    try:
        dm = await adapter.create_dm(UserId(heidi.user_id))
        await heidi.accept_invite()
        await adapter.send_notice(dm, "hi", "hi")
        msg = await heidi.wait_message(dm, bot.user_id)
        assert isinstance(msg, nio.RoomMessageNotice)
        assert msg.decrypted
        assert msg.body == "hi"
    finally:
        await adapter.stop()


async def test_token_rejected_while_running_logs_in_again_without_redelivery(
    synapse: Synapse, make_human: MakeHuman, bot: BotAccount
) -> None:
    ivan = await make_human("ivan")
    adapter = bot.adapter(synapse, sync_timeout_ms=500)
    await adapter.start()
    room = RoomId(await ivan.create_room([bot.user_id]))
    await adapter.join(room)
    rec = Recorder(adapter)
    async with running(adapter, rec):
        await ivan.send_text(room, "before")
        await rec.next(IncomingMessage, lambda m: m.body == "before")
        assert bot.sessions.session is not None
        old_device = bot.sessions.session.device_id
        resp = await synapse.client_request(
            bot.sessions.session.access_token, "POST", "/_matrix/client/v3/logout", {}
        )
        assert resp.status_code == 200
        await wait_until(lambda: adapter.logins == 2, what="a second login")
        assert adapter.device_id != old_device
        await ivan.send_text(room, "after")
        await rec.next(IncomingMessage, lambda m: m.body == "after")
    assert rec.messages() == ["before", "after"]
