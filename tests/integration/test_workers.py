"""Relay workers on PostgreSQL: leases (claim, renew, expiry, takeover, fair spread, the write fence),
the NOTIFY wake-up of the Matrix process, and exactly once across a takeover — over loopback, with the
fake GoToSocial, a real throwaway PostgreSQL and the recording Matrix fake. Time is the keepers' injected
clock, moved by hand: nothing here waits for a lease to expire."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admin.accounts import account_table, list_accounts
from bot.config import Config, load_config
from bot.errors import KeyRingError, WorkerIdInUseError
from bot.relay.delivery_store import DeliveryStore, LeaseLost
from bot.relay.lease_keeper import LeaseKeeper, LeaseTiming
from bot.relay.manager import AccountsElsewhere, RelayManager
from bot.relay.notices import OutboxNotices
from bot.relay.outbox_feed import OutboxFeed
from bot.relay.outbox_writer import OutboxDraft, OutboxWriter
from bot.relay_worker import running_relay_worker
from bot.store.keyring import KeyRing
from bot.store.leases import LeasesRepository
from bot.store.models import AccountState
from bot.store.outbox import OutboxRecord
from bot.store.pg_notify import ACCOUNTS_CHANNEL, OUTBOX_CHANNEL, Listener, notify
from bot.store.records import AccountId
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.matrix import RecordingMatrix
from tests.integration.relay_support import FAST, FAST_POLL, Harness, cursor_is
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)]

TTL = timedelta(seconds=20)
TIMING = LeaseTiming(ttl=TTL, heartbeat=3600.0)  # rounds run when a test calls them


@dataclass
class Clock:
    now: datetime = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Calls:
    claimed: list[AccountId]
    lost: list[AccountId]

    async def on_claimed(self, account_id: AccountId) -> None:
        self.claimed.append(account_id)

    async def on_lost(self, account_id: AccountId) -> None:
        self.lost.append(account_id)


def keeper(sessions: async_sessionmaker[AsyncSession], name: str, clock: Clock) -> tuple[LeaseKeeper, Calls]:
    calls = Calls([], [])
    return (
        LeaseKeeper(
            sessions, name, on_claimed=calls.on_claimed, on_lost=calls.on_lost, timing=TIMING, clock=clock
        ),
        calls,
    )


async def add_accounts(h: Harness, gts: FakeGoToSocial, count: int) -> list[AccountId]:
    return [(await h.add_account(gts, f"user{i}", cursor="0")).id for i in range(count)]


async def test_leases_spread_fairly_renew_and_move_when_a_worker_dies(
    gts: FakeGoToSocial, h: Harness
) -> None:
    accounts = await add_accounts(h, gts, 4)
    clock = Clock()
    a, a_calls = keeper(h.sessions, "worker-a", clock)
    b, b_calls = keeper(h.sessions, "worker-b", clock)

    first = await a.round()  # alone: its share is everything
    assert sorted(first.claimed) == accounts
    assert a.held == set(accounts)

    assert (await b.round()).claimed == ()  # two workers now, but every lease is held and unexpired
    released = await a.round()  # above its share of 2: the highest ids go
    assert sorted(released.lost) == accounts[2:]
    assert sorted((await b.round()).claimed) == accounts[2:]
    assert a.held == set(accounts[:2])
    assert b.held == set(accounts[2:])

    clock.advance(TTL / 2)  # both renew: nothing moves
    assert (await a.round()) == (await b.round())
    assert a.held == set(accounts[:2])

    # b dies (stops renewing). Until its leases expire, a takes nothing; the moment they do, a takes all.
    clock.advance(TTL - timedelta(seconds=1))
    assert (await a.round()).claimed == ()
    clock.advance(timedelta(seconds=2))
    assert sorted((await a.round()).claimed) == accounts[2:]
    assert a.held == set(accounts)

    # b comes back (it was only stalled): its first round finds its leases gone and stops those accounts.
    back = await b.round()
    assert sorted(back.lost) == accounts[2:]
    assert b_calls.lost[-2:] == accounts[2:]
    async with h.sessions() as s, s.begin():
        holders = await LeasesRepository(s).holders()
    assert {account: holder.worker for account, holder in holders.items()} == dict.fromkeys(
        accounts, "worker-a"
    )
    assert a_calls.claimed == [*accounts, *accounts[2:]]  # all; then back the two it had released
    assert a_calls.lost == accounts[2:]


async def test_a_stalled_worker_cannot_write_for_an_account_it_lost(gts: FakeGoToSocial, h: Harness) -> None:
    [account] = await add_accounts(h, gts, 1)
    clock = Clock()
    a, _ = keeper(h.sessions, "worker-a", clock)
    b, _ = keeper(h.sessions, "worker-b", clock)
    await a.round()
    store_a = DeliveryStore(
        h.sessions, OutboxWriter(h.sessions, h.keyring, write_guard=a.write_guard), "@user0:example.org"
    )
    draft = OutboxDraft(txn_id="gts.1.10", body="one", html="one")
    assert await store_a.write_batch([draft], {account: "10"}) is not None

    clock.advance(TTL + timedelta(seconds=1))
    await b.round()  # a stalled past its lease; b took the account
    assert b.held == {account}
    with pytest.raises(LeaseLost):
        await store_a.write_batch([OutboxDraft(txn_id="gts.1.11", body="two", html="two")], {account: "11"})
    assert [r.txn_id for r in await h.outbox()] == ["gts.1.10"]  # the refused write left nothing


async def test_claims_skip_rows_another_worker_is_claiming(gts: FakeGoToSocial, h: Harness) -> None:
    accounts = await add_accounts(h, gts, 4)
    now = Clock()()
    async with h.sessions() as s, s.begin():
        await LeasesRepository(s).add_missing()
    async with h.sessions() as first, first.begin():
        mine = await LeasesRepository(first).claim("worker-a", now, TTL, 2)
        # worker-a's transaction is still open, its rows locked: worker-b neither waits nor takes them.
        async with h.sessions() as second, second.begin():
            theirs = await LeasesRepository(second).claim("worker-b", now, TTL, 4)
    assert mine == accounts[:2]
    assert theirs == accounts[2:]


async def test_a_paused_or_deleted_account_is_dropped_by_its_worker(gts: FakeGoToSocial, h: Harness) -> None:
    accounts = await add_accounts(h, gts, 3)
    clock = Clock()
    a, calls = keeper(h.sessions, "worker-a", clock)
    await a.round()
    async with h.sessions() as s, s.begin():
        repos = Repositories(s, h.keyring)
        await repos.accounts.set_state(accounts[0], AccountState.PAUSED)
        await repos.accounts.delete(accounts[1])
    assert sorted((await a.round()).lost) == accounts[:2]
    assert a.held == {accounts[2]}
    assert calls.lost == accounts[:2]


async def test_accounts_list_names_the_worker_and_the_lease_expiry(gts: FakeGoToSocial, h: Harness) -> None:
    [account] = await add_accounts(h, gts, 1)
    clock = Clock()
    a, _ = keeper(h.sessions, "worker-a", clock)
    await a.round()
    [summary] = await list_accounts(h.sessions)
    assert summary.id == account
    assert summary.worker == "worker-a"
    assert summary.lease_expires_at == clock.now + TTL
    assert account_table([summary])[1].endswith("worker-a (lease until 2026-12-01 12:00:20Z)")
    await a.retire()  # a clean stop frees the lease at once
    [summary] = await list_accounts(h.sessions)
    assert summary.worker is None


@dataclass
class Heard:
    """What a LISTENing connection received."""

    items: list[tuple[str, str | None]]

    def __call__(self, channel: str, payload: str | None) -> None:
        self.items.append((channel, payload))


@pytest.fixture
async def listening(db_url: str) -> AsyncIterator[tuple[Listener, Heard, asyncio.Event]]:
    """A Listener on both channels; the event is set by each notification it hears."""
    heard = Heard([])
    woken = asyncio.Event()

    def on_notify(channel: str, payload: str | None) -> None:
        heard(channel, payload)
        woken.set()

    listener = Listener(make_url(db_url), [OUTBOX_CHANNEL, ACCOUNTS_CHANNEL], on_notify)
    listener.start()
    try:
        await wait_until(listener.listening.is_set, what="LISTEN connection")
        yield listener, heard, woken
    finally:
        await listener.aclose()


async def test_notify_is_delivered_on_commit_and_not_on_rollback(
    h: Harness, listening: tuple[Listener, Heard, asyncio.Event]
) -> None:
    _, heard, _ = listening
    async with h.sessions() as s:
        await s.begin()
        await notify(s, ACCOUNTS_CHANNEL, "rolled-back")
        await s.rollback()
    async with h.sessions() as s, s.begin():
        await notify(s, ACCOUNTS_CHANNEL, "committed")
    await wait_until(lambda: (ACCOUNTS_CHANNEL, "committed") in heard.items, what="the committed NOTIFY")
    assert (ACCOUNTS_CHANNEL, "rolled-back") not in heard.items  # it was sent before the committed one


async def test_a_worker_outbox_write_wakes_the_matrix_process_without_polling(
    gts: FakeGoToSocial, h: Harness, db_url: str
) -> None:
    [account] = await add_accounts(h, gts, 1)
    a, _ = keeper(h.sessions, "worker-a", Clock())
    await a.round()
    taken: list[OutboxRecord] = []
    feed = OutboxFeed(
        h.sessions, h.keyring, taken.extend, poll_seconds=3600.0
    )  # only a wake-up makes it scan again
    listener = Listener(make_url(db_url), [OUTBOX_CHANNEL], lambda _channel, _payload: feed.wake())
    listener.start()
    try:
        await wait_until(listener.listening.is_set, what="LISTEN connection")
        feeding = asyncio.create_task(feed.run())  # after the connect wake-up: its first scan is its only one
        try:
            await wait_until(lambda: feed.scans == 1, what="the first scan")
            store = DeliveryStore(
                h.sessions,
                OutboxWriter(h.sessions, h.keyring, write_guard=a.write_guard),
                "@user0:example.org",
            )
            await store.write_batch([OutboxDraft(txn_id="gts.w.1", body="b", html="h")], {account: "10"})
            await wait_until(lambda: [r.txn_id for r in taken] == ["gts.w.1"], what="the NOTIFY wake-up")
            assert feed.scans == 2
        finally:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
    finally:
        await listener.aclose()


async def test_the_feed_hands_each_row_over_once_and_forgets_rows_that_are_gone(h: Harness) -> None:
    await h.set_dm("@u:example.org", "!dm:example.org")
    taken: list[OutboxRecord] = []
    feed = OutboxFeed(h.sessions, h.keyring, taken.extend)
    store = DeliveryStore(h.sessions, OutboxWriter(h.sessions, h.keyring), "@u:example.org")
    [first] = await store.write_batch([OutboxDraft(txn_id="t1", body="1", html="1")], {}) or []
    assert await feed.scan() == 1
    assert await feed.scan() == 0  # still waiting, already handed over
    await store.commit(first)
    await store.write_batch([OutboxDraft(txn_id="t2", body="2", html="2")], {})
    assert await feed.scan() == 1
    assert [r.txn_id for r in taken] == ["t1", "t2"]


def worker_manager(h: Harness, keeper_: list[LeaseKeeper]) -> RelayManager:
    async def guard(session: AsyncSession, account_ids: Collection[AccountId]) -> None:
        await keeper_[0].write_guard(session, account_ids)  # the keeper is made after the manager

    manager = RelayManager(
        sessions=h.sessions,
        keyring=h.keyring,
        client=h.client,
        connector=h.connector,
        sender=None,
        relay_config=FAST_POLL,
        allow_http=True,
        command_prefix="!gts",
        notify_user=OutboxNotices(h.sessions, h.keyring),
        tuning=FAST,
        rng=random.Random(7),
        write_guard=guard,
    )
    h.managers.append(manager)
    return manager


def matrix_manager(h: Harness, sender: RecordingMatrix, elsewhere: AccountsElsewhere) -> RelayManager:
    manager = RelayManager(
        sessions=h.sessions,
        keyring=h.keyring,
        client=h.client,
        connector=h.connector,
        sender=sender,
        relay_config=FAST_POLL,
        allow_http=True,
        command_prefix="!gts",
        notify_user=h.notified,
        tuning=FAST,
        rng=random.Random(7),
        accounts_elsewhere=elsewhere,
    )
    h.managers.append(manager)
    return manager


async def start_worker(h: Harness, name: str, clock: Clock) -> tuple[LeaseKeeper, RelayManager]:
    holder: list[LeaseKeeper] = []
    manager = worker_manager(h, holder)
    lease_keeper = LeaseKeeper(
        h.sessions,
        name,
        on_claimed=manager.restart_account,
        on_lost=manager.remove_account,
        timing=TIMING,
        clock=clock,
    )
    holder.append(lease_keeper)
    await manager.start()
    return lease_keeper, manager


async def test_exactly_once_when_a_worker_dies_with_written_but_unsent_messages(
    gts: FakeGoToSocial, h: Harness, listening: tuple[Listener, Heard, asyncio.Event]
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = (await h.add_account(gts, "alice", cursor=start["id"])).id
    sender = RecordingMatrix()
    _, heard, _ = listening

    async def elsewhere(account_id: AccountId) -> None:  # as bot.app wires it
        async with h.sessions() as s, s.begin():
            await notify(s, ACCOUNTS_CHANNEL, str(account_id))

    matrix = matrix_manager(h, sender, elsewhere)
    await matrix.start()
    feed = OutboxFeed(h.sessions, h.keyring, matrix.take_outbox, poll_seconds=0.05)
    feeding = asyncio.create_task(feed.run())
    clock = Clock()
    try:
        a, worker_a = await start_worker(h, "worker-a", clock)
        await a.round()
        await wait_until(lambda: gts.open_streams("alice") == 1, what="worker a streaming")
        gts.notify("alice", "mention", "bob", status_text="msg-1")
        await wait_until(lambda: len(sender.events) == 1, what="the first message")

        sender.gate = asyncio.Event()  # the homeserver stalls: what the worker writes now stays unsent
        gts.notify("alice", "mention", "bob", status_text="msg-2")
        await wait_until(lambda: len(sender.attempts) == 2, what="msg-2 written and being sent")
        await worker_a.stop()  # worker a dies; its lease is left to expire
        await wait_until(lambda: gts.open_streams("alice") == 0, what="worker a's stream gone")
        third = gts.notify("alice", "mention", "bob", status_text="msg-3")

        clock.advance(TTL + timedelta(seconds=1))
        b, _ = await start_worker(h, "worker-b", clock)
        assert (await b.round()).claimed == (account,)
        await wait_until(lambda: gts.open_streams("alice") == 1, what="worker b streaming")
        sender.gate.set()
        await wait_until(lambda: len(sender.events) == 3, what="every message")
        text = "\n".join(sender.bodies())
        for word in ("msg-1", "msg-2", "msg-3"):
            assert text.count(word) == 1
        assert len(sender.attempts) == 3  # nothing was sent twice
        await wait_until(lambda: cursor_is(h, account, third["id"]), what="the cursor committed")
        assert await h.outbox() == []

        await matrix.restart_account(account)  # the Matrix process relays nothing itself: it tells workers
        await wait_until(lambda: (ACCOUNTS_CHANNEL, str(account)) in heard.items, what="the workers told")
        assert matrix.relaying_accounts == 0
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)


async def test_a_changed_account_is_restarted_by_its_holder_and_claimed_when_new(
    gts: FakeGoToSocial, h: Harness
) -> None:
    [first] = await add_accounts(h, gts, 1)
    a, calls = keeper(h.sessions, "worker-a", Clock())
    running = asyncio.create_task(a.run())  # one round now; the next only when woken (heartbeat: 1 h)
    try:
        await wait_until(lambda: first in a.held, what="the first round")
        await a.account_changed(first)  # e.g. reconnected with a new token: the holder restarts it
        assert calls.claimed == [first, first]
        second = (await h.add_account(gts, "newcomer", cursor="0")).id
        await a.account_changed(second)  # not held yet: a wake-up, and that round claims it
        await wait_until(lambda: second in a.held, what="the new account claimed")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert calls.claimed == [first, first, second]


async def test_a_worker_tells_a_user_through_the_outbox_and_wakes_the_matrix_process(
    h: Harness, listening: tuple[Listener, Heard, asyncio.Event]
) -> None:
    _, heard, _ = listening
    notices = OutboxNotices(h.sessions, h.keyring)
    await notices("@nobody:example.org", "plain", "<b>html</b>")  # no DM room: nothing to write
    await h.set_dm("@u:example.org", "!dm:example.org")
    await notices("@u:example.org", "Your account stopped working", "<b>Your account</b> stopped working")
    [row] = await h.outbox()
    assert (row.matrix_user_id, row.room_id, row.body) == (
        "@u:example.org",
        "!dm:example.org",
        "Your account stopped working",
    )
    assert row.cursors == {}
    await wait_until(lambda: (OUTBOX_CHANNEL, "") in heard.items, what="the NOTIFY")


async def test_no_outbox_write_succeeds_for_a_revoked_account(gts: FakeGoToSocial, h: Harness) -> None:
    [account] = await add_accounts(h, gts, 1)
    a, _ = keeper(h.sessions, "worker-a", Clock())
    await a.round()
    store = DeliveryStore(
        h.sessions, OutboxWriter(h.sessions, h.keyring, write_guard=a.write_guard), "@user0:example.org"
    )
    async with h.sessions() as s, s.begin():
        await Repositories(s, h.keyring).accounts.delete(account)  # e.g. `gts-bot accounts revoke`
    assert a.held == {account}  # the worker has not noticed yet
    with pytest.raises(LeaseLost):
        await store.write_batch([OutboxDraft(txn_id="gts.1.12", body="x", html="x")], {account: "12"})
    assert await h.outbox() == []


def worker_config(db_url: str, tmp_path: Path) -> Config:
    return load_config(
        None,
        {
            "GTS_BOT_MATRIX__HOMESERVER": "https://matrix.test.org",
            "GTS_BOT_MATRIX__USER_ID": "@bot:test.org",
            "GTS_BOT_MATRIX__PASSWORD": "pw",
            "GTS_BOT_DATA_DIR": str(tmp_path / "data"),
            "GTS_BOT_DATABASE__URL": db_url,
        },
    )


async def test_a_relay_worker_never_creates_the_key_file(db_url: str, tmp_path: Path) -> None:
    config = worker_config(db_url, tmp_path)
    with pytest.raises(KeyRingError, match="only reads the key file"):
        async with running_relay_worker(config, worker_id="relay-1"):
            pass
    assert not config.encryption.key_file.exists()


async def test_a_lapsed_lease_claimed_back_restarts_the_account(gts: FakeGoToSocial, h: Harness) -> None:
    [account] = await add_accounts(h, gts, 1)
    clock = Clock()
    a, calls = keeper(h.sessions, "worker-a", clock)
    await a.round()
    clock.advance(TTL + timedelta(seconds=1))  # a stalled past its lease; nobody else took it meanwhile
    assert (await a.round()).claimed == (account,)  # its relay's cursor may be stale: start it again
    assert calls.claimed == [account, account]
    assert calls.lost == []
    assert a.held == {account}


async def test_the_listener_reconnects_after_its_connection_is_closed_while_subscribing(
    h: Harness, db_url: str
) -> None:
    connects: list[Any] = []

    async def connect_and_lose_the_first(dsn: str) -> Any:
        connection = await asyncpg.connect(dsn)
        connects.append(connection)
        if len(connects) == 1:  # the server ends it before the first LISTEN: add_listener raises
            async with h.sessions() as s, s.begin():
                pid = connection.get_server_pid()
                await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await wait_until(connection.is_closed, what="the terminated connection seen as closed")
        return connection

    heard = Heard([])
    listener = Listener(
        make_url(db_url), [ACCOUNTS_CHANNEL], heard, retry_seconds=0.01, connect=connect_and_lose_the_first
    )
    listener.start()
    try:
        await wait_until(listener.listening.is_set, what="LISTENing on a second connection")
        assert len(connects) == 2
        async with h.sessions() as s, s.begin():
            await notify(s, ACCOUNTS_CHANNEL, "7")
        await wait_until(lambda: (ACCOUNTS_CHANNEL, "7") in heard.items, what="a NOTIFY after the reconnect")
    finally:
        await listener.aclose()


async def test_a_worker_that_missed_a_new_token_restarts_the_account_on_the_old_tokens_401(
    gts: FakeGoToSocial, h: Harness
) -> None:
    [account] = await add_accounts(h, gts, 1)
    a, worker = await start_worker(h, "worker-a", Clock())
    await a.round()
    await wait_until(lambda: gts.open_streams("user0") == 1, what="streaming")
    [old_stream] = gts.state.streams
    await h.add_account(gts, "user0")  # reconnected with a new token; the worker missed the NOTIFY
    new_token = (await h.account(account)).token
    gts.state.forget_token(old_stream.access)
    old_stream.abort()  # the old token's next request is a 401, but a newer token is stored: not broken
    await wait_until(
        lambda: [c.access for c in gts.state.streams] == [new_token], what="streaming with the new token"
    )
    assert (await h.account(account)).state is AccountState.ACTIVE
    assert worker.relaying_accounts == 1


async def test_after_a_listen_reconnect_a_worker_restarts_accounts_whose_token_changed(
    gts: FakeGoToSocial, h: Harness
) -> None:
    [changed, _] = await add_accounts(h, gts, 2)
    a, worker = await start_worker(h, "worker-a", Clock())
    await a.round()
    await wait_until(lambda: gts.open_streams() == 2, what="both streaming")
    same_stream = next(c for c in gts.state.streams if c.user_id == gts.user("user1").user_id)
    await h.add_account(gts, "user0")  # a new token, announced while the worker was not listening
    new_token = (await h.account(changed)).token
    await worker.restart_changed()
    await wait_until(
        lambda: sorted(c.access for c in gts.state.streams) == sorted([new_token, same_stream.access]),
        what="user0 streaming with its new token",
    )
    assert same_stream in gts.state.streams  # the unchanged account was left alone


async def test_a_second_worker_under_a_live_workers_id_is_refused(db_url: str, tmp_path: Path) -> None:
    config = worker_config(db_url, tmp_path)
    config.data_dir.mkdir(mode=0o700)
    KeyRing.generate_file(config.encryption.key_file)
    async with running_relay_worker(config, worker_id="relay-1") as first:
        with pytest.raises(WorkerIdInUseError, match="'relay-1' is already running") as refused:
            async with running_relay_worker(config, worker_id="relay-1"):
                pass
        assert refused.value.exit_code == 75  # temporary: systemd restarts it, after a crash that works
        async with first.sessions() as s, s.begin():
            assert await LeasesRepository(s).live_workers(datetime.now(UTC)) == 1  # not retired
    async with running_relay_worker(config, worker_id="relay-1"):  # a clean stop frees the id at once
        pass


async def test_the_feed_holds_at_most_per_user_rows_and_takes_more_as_they_are_sent(h: Harness) -> None:
    await h.set_dm("@u:example.org", "!u:example.org")
    await h.set_dm("@v:example.org", "!v:example.org")
    taken: list[OutboxRecord] = []
    feed = OutboxFeed(
        h.sessions, h.keyring, taken.extend, per_user=2, poll_seconds=3600.0
    )  # scans only when woken
    store_u = DeliveryStore(
        h.sessions, OutboxWriter(h.sessions, h.keyring), "@u:example.org", on_removed=feed.rows_gone
    )
    store_v = DeliveryStore(
        h.sessions, OutboxWriter(h.sessions, h.keyring), "@v:example.org", on_removed=feed.rows_gone
    )
    drafts = [OutboxDraft(txn_id=f"u{n}", body=str(n), html=str(n)) for n in (1, 2, 3)]
    first, *_ = await store_u.write_batch(drafts, {}) or []
    await store_v.write_batch([OutboxDraft(txn_id="v1", body="v", html="v")], {})
    feeding = asyncio.create_task(feed.run())
    try:
        await wait_until(lambda: feed.scans == 1, what="the first scan")
        assert [r.txn_id for r in taken] == ["u1", "u2", "v1"]  # u3 waits in the table, not in memory
        await store_u.commit(first)  # u1 sent: room for one more of u's, and the feed is told
        await wait_until(lambda: [r.txn_id for r in taken][3:] == ["u3"], what="u3 handed over")
        assert feed.scans == 2
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
