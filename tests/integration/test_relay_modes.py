"""Relay modes and policies over loopback: polling fallback, grouping under a homeserver rate limit, type
filters, pause/resume, Mastodon numeric ids, and the per-instance circuit breaker."""

from __future__ import annotations

import asyncio
import dataclasses

from bot.config import RelayConfig
from bot.relay.delivery import txn_id_for
from bot.store.models import AccountState
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import MASTODON, FakeGoToSocial
from tests.integration.relay_support import FAST, Harness, cursor_is
from tests.waiting import wait_until


async def test_polls_when_the_token_lacks_the_read_scope_streaming_needs(
    gts: FakeGoToSocial, h: Harness
) -> None:
    account = await h.add_account(gts, "alice", scope="read:notifications read:accounts", cursor="0")
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: manager.account_mode(account.id) == "polling", what="poll mode")
    n = gts.notify("alice", "mention", "bob", status_text="found by polling")
    await wait_until(lambda: len(h.sender.events) == 1, what="polled delivery")
    assert "found by polling" in h.sender.events[0].body
    await wait_until(lambda: cursor_is(h, account.id, n["id"]))
    assert gts.open_streams() == 0
    assert manager.live_streams == 0
    assert (await h.account(account.id)).state is AccountState.ACTIVE


async def test_polls_when_the_instance_has_no_streaming(gts: FakeGoToSocial, h: Harness) -> None:
    gts.faults.streaming_enabled = False
    account = await h.add_account(gts, "alice", cursor="0")
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: manager.account_mode(account.id) == "polling", what="poll mode")
    gts.notify("alice", "follow", "bob")
    await wait_until(lambda: len(h.sender.events) == 1)
    assert manager.live_streams == 0


async def test_polls_only_when_streaming_is_switched_off(gts: FakeGoToSocial, h: Harness) -> None:
    account = await h.add_account(gts, "alice", cursor="0")
    manager = h.manager(config=RelayConfig(streaming=False, poll_interval=0.05, poll_jitter=0.5))
    await manager.start()
    gts.notify("alice", "follow", "bob")
    await wait_until(lambda: len(h.sender.events) == 1)
    assert manager.account_mode(account.id) == "polling"
    assert gts.requests_to("/api/v1/streaming") == 0


async def test_a_burst_under_a_homeserver_rate_limit_is_grouped_and_nothing_is_lost(
    gts: FakeGoToSocial, h: Harness
) -> None:
    account = await h.add_account(gts, "alice", cursor="0")
    h.sender.rate_limited = True
    h.sender.gate = asyncio.Event()  # the homeserver holds the first send back
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    favs = [gts.notify("alice", "favourite", "fan0", status_text="post 0")]
    await wait_until(lambda: len(h.sender.attempts) == 1, what="the first send, held")
    favs += [gts.notify("alice", "favourite", f"fan{i}", status_text=f"post {i}") for i in range(1, 10)]
    # one message being sent, nine notifications waiting behind it (nothing can group them meanwhile)
    await wait_until(lambda: manager.queued_notifications == 10, what="all queued")
    h.sender.gate.set()
    await wait_until(lambda: cursor_is(h, account.id, favs[-1]["id"]), what="all delivered")
    # The first send went out alone while the rest waited behind it; the rest then left as one message.
    assert len(h.sender.events) == 2
    text = "\n".join(h.sender.bodies())
    assert [text.count(f"@fan{i}@") for i in range(10)] == [1] * 10
    assert await h.outbox() == []


async def test_the_type_filter_skips_other_types_but_moves_the_cursor_past_them(
    gts: FakeGoToSocial, h: Harness
) -> None:
    account = await h.add_account(gts, "alice", cursor="0")
    async with h.sessions() as s, s.begin():
        await Repositories(s, h.keyring).accounts.set_notify_types(account.id, ["mention"])
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    follow = gts.notify("alice", "follow", "bob")
    await wait_until(lambda: cursor_is(h, account.id, follow["id"]), what="skip committed")
    mention = gts.notify("alice", "mention", "carol", status_text="only mentions")
    fav = gts.notify("alice", "favourite", "dan")
    await wait_until(lambda: cursor_is(h, account.id, fav["id"]))
    assert len(h.sender.events) == 1
    assert "only mentions" in h.sender.events[0].body
    assert h.sender.events[0].txn_id == txn_id_for([(account.id, mention["id"])])


async def test_pause_closes_the_stream_and_resume_delivers_what_came_meanwhile(
    gts: FakeGoToSocial, h: Harness
) -> None:
    account = await h.add_account(gts, "alice", cursor="0")
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    async with h.sessions() as s, s.begin():
        await Repositories(s, h.keyring).accounts.set_state(account.id, AccountState.PAUSED)
    await manager.restart_account(account.id)
    assert manager.live_streams == 0
    assert manager.account_mode(account.id) is None
    await wait_until(lambda: gts.open_streams("alice") == 0)
    paused = [gts.notify("alice", "mention", "bob", status_text=f"while paused {i}") for i in range(3)]
    assert manager.relaying_accounts == 0  # nothing reads alice's notifications while she is paused

    async with h.sessions() as s, s.begin():
        await Repositories(s, h.keyring).accounts.set_state(account.id, AccountState.ACTIVE)
    await manager.restart_account(account.id)
    await wait_until(lambda: cursor_is(h, account.id, paused[-1]["id"]), what="resumed")
    text = "\n".join(h.sender.bodies())
    assert [text.count(f"while paused {i}") for i in range(3)] == [1, 1, 1]
    assert len(h.sender.events) < 3  # the backlog went out grouped
    await wait_until(lambda: gts.open_streams("alice") == 1)


async def test_mastodon_numeric_ids_across_a_digit_boundary_arrive_in_order(h: Harness) -> None:
    async with FakeGoToSocial(profile=MASTODON, id_start=80) as gts:
        gts.add_user("alice")
        start = gts.notify("alice", "follow", "zed")
        account = await h.add_account(gts, "alice", cursor=start["id"])
        while int(gts.notify("alice", "follow", "filler")["id"]) < 95:
            pass
        async with h.sessions() as s, s.begin():
            await Repositories(s, h.keyring).accounts.set_cursor(account.id, str(95))
        mentions = [gts.notify("alice", "mention", "bob", status_text=f"number {i}") for i in range(6)]
        ids = [m["id"] for m in mentions]
        assert len(ids[0]) == 2
        assert len(ids[-1]) == 3
        manager = h.manager(tuning=dataclasses.replace(FAST, page_limit=2))
        await manager.start()
        await wait_until(lambda: cursor_is(h, account.id, ids[-1]), what="catch-up to the newest")
        text = "\n".join(h.sender.bodies())
        positions = [text.index(f"number {i}") for i in range(6)]
        assert positions == sorted(positions)
        assert "filler" not in text
        await wait_until(lambda: gts.open_streams("alice") == 1)
        live = gts.notify("alice", "mention", "carol", status_text="live after")
        await wait_until(lambda: cursor_is(h, account.id, live["id"]))
        assert "live after" in h.sender.events[-1].body


async def test_a_down_instance_opens_its_breaker_while_another_instance_keeps_flowing(h: Harness) -> None:
    async with FakeGoToSocial() as down, FakeGoToSocial() as up:
        a = await h.add_account(down, "alice", cursor="0")
        b = await h.add_account(up, "bob", cursor="0")
        manager = h.manager()
        await manager.start()
        await wait_until(lambda: down.open_streams() == 1 and up.open_streams() == 1)

        down.faults.down = True
        down.drop_streams()
        await wait_until(lambda: manager.open_circuit_breakers == 1, what="breaker open")
        n = up.notify("bob", "mention", "carol", status_text="other instance")
        await wait_until(lambda: cursor_is(h, b.id, n["id"]))
        assert "other instance" in h.sender.events[-1].body
        assert manager.account_mode(b.id) == "streaming"

        missed = down.notify("alice", "mention", "dan", status_text="after the outage")
        down.faults.down = False
        await wait_until(lambda: cursor_is(h, a.id, missed["id"]), what="recovered")
        assert manager.open_circuit_breakers == 0
        assert "after the outage" in h.sender.events[-1].body
        await wait_until(lambda: down.open_streams() == 1, what="streaming again")
