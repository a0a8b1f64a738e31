"""Relay memory bounds and cursor safety over loopback: a flood (catch-up backlog, stream burst, endless
pages) waits on the instance instead of piling up in memory, nothing is lost, and cursors never move back."""

from __future__ import annotations

import asyncio
import dataclasses
import re

from bot.config import RelayConfig
from bot.relay.tuning import RelayTuning
from bot.store.outbox import OutboxRepository
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.relay_support import FAST, Harness, cursor_is
from tests.waiting import wait_until

NOTIFICATIONS = "/api/v1/notifications"


def assert_each_once_in_order(h: Harness, count: int) -> None:
    seen = [int(n) for n in re.findall(r"flood (\d+)\b", "\n".join(h.sender.bodies()))]
    assert seen == list(range(count))


def tight(
    *, page_limit: int = FAST.page_limit, catch_up_pages: int = 10, stream_buffer: int = 500
) -> RelayTuning:
    return dataclasses.replace(
        FAST, max_pending=4, page_limit=page_limit, catch_up_pages=catch_up_pages, stream_buffer=stream_buffer
    )


async def test_a_catch_up_backlog_waits_for_delivery_instead_of_filling_memory(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    flood = [gts.notify("alice", "mention", "bob", status_text=f"flood {i}") for i in range(30)]
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.gate = asyncio.Event()  # the homeserver holds the first send: delivery cannot drain
    manager = h.manager(tuning=tight(page_limit=2, catch_up_pages=100))
    await manager.start()
    await wait_until(lambda: len(h.sender.attempts) == 1, what="first send")
    # The send never returns, so once the relay waits for room in the queue nothing can move any more.
    await wait_until(lambda: manager.relays_held_back == 1, what="the relay held back by the full queue")
    # At most max_pending + one page waiting, plus the batch being sent; not the whole backlog.
    assert manager.queued_notifications <= 4 + 2 + 6
    assert gts.requests_to(NOTIFICATIONS) <= 6

    h.sender.gate.set()
    await wait_until(lambda: cursor_is(h, account.id, flood[-1]["id"]), what="all delivered")
    assert_each_once_in_order(h, 30)
    assert await h.outbox() == []


async def test_a_burst_on_the_stream_is_not_read_while_delivery_is_blocked(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.gate = asyncio.Event()
    manager = h.manager(tuning=tight(stream_buffer=3))
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    # The first notification is the send the homeserver holds; once it is being sent the catch-up is
    # over, so the flood can only come in over the stream.
    gts.notify("alice", "mention", "bob", status_text="flood 0")
    await wait_until(lambda: len(h.sender.attempts) == 1, what="first send")
    flood = [gts.notify("alice", "mention", "bob", status_text=f"flood {i}") for i in range(1, 40)]
    # Everything stops: the relay waits for room in the queue (max_pending = 4 handed over), the stream
    # pump for room in the full buffer (3), and the held send carries the first notification.
    await wait_until(
        lambda: manager.relays_held_back == 1 and manager.queued_notifications == 4 + 3 + 1,
        what="the relay and its stream held back",
    )

    h.sender.gate.set()
    await wait_until(lambda: cursor_is(h, account.id, flood[-1]["id"]), what="all delivered")
    assert_each_once_in_order(h, 40)
    assert await h.outbox() == []


async def test_catch_up_stops_after_its_page_budget_and_pauses(gts: FakeGoToSocial, h: Harness) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    flood = [gts.notify("alice", "mention", "bob", status_text=f"flood {i}") for i in range(20)]
    account = await h.add_account(gts, "alice", cursor=start["id"])
    tuning = dataclasses.replace(FAST, page_limit=2, catch_up_pages=3, catch_up_pause=60.0)
    manager = h.manager(config=RelayConfig(streaming=False, poll_interval=0.05), tuning=tuning)
    await manager.start()
    await wait_until(lambda: cursor_is(h, account.id, flood[5]["id"]), what="first round delivered")
    await wait_until(lambda: h.naps.count(60.0) == 1, what="the pause after the page budget")
    assert gts.requests_to(NOTIFICATIONS) == 3  # an instance with endless pages gets no more than this
    assert (await h.account(account.id)).cursor == flood[5]["id"]
    assert_each_once_in_order(h, 6)
    assert "flood 6" not in "\n".join(h.sender.bodies())


async def test_a_long_backlog_continues_after_each_pause_until_it_is_all_delivered(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    flood = [gts.notify("alice", "mention", "bob", status_text=f"flood {i}") for i in range(15)]
    account = await h.add_account(gts, "alice", cursor=start["id"])
    manager = h.manager(tuning=dataclasses.replace(FAST, page_limit=2, catch_up_pages=2, catch_up_pause=0.05))
    await manager.start()
    await wait_until(lambda: cursor_is(h, account.id, flood[-1]["id"]), what="all delivered")
    assert_each_once_in_order(h, 15)
    await wait_until(lambda: gts.open_streams("alice") == 1, what="streaming after the catch-up")
    live = gts.notify("alice", "mention", "carol", status_text="live after")
    await wait_until(lambda: cursor_is(h, account.id, live["id"]))


async def test_a_stale_outbox_row_never_moves_the_cursor_back(gts: FakeGoToSocial, h: Harness) -> None:
    gts.add_user("alice")
    old = gts.notify("alice", "follow", "zed")
    newest = gts.notify("alice", "follow", "yan")
    account = await h.add_account(gts, "alice", cursor=newest["id"])
    async with h.sessions() as s, s.begin():  # left by an earlier run, for an older notification
        await OutboxRepository(s, h.keyring).add(
            matrix_user_id=account.matrix_user_id,
            room_id="!dm:example.org",
            txn_id="gts.stale",
            body="stale",
            html="stale",
            cursors={account.id: old["id"]},
        )
    await h.manager().start()
    await wait_until(lambda: _outbox_empty(h), what="stale row sent")
    assert (await h.account(account.id)).cursor == newest["id"]
    await wait_until(lambda: gts.open_streams("alice") == 1)
    later = gts.notify("alice", "mention", "bob", status_text="after the stale row")
    await wait_until(lambda: cursor_is(h, account.id, later["id"]))
    assert h.sender.bodies()[0] == "stale"
    assert "after the stale row" in h.sender.bodies()[-1]


async def _outbox_empty(h: Harness) -> bool:
    return await h.outbox() == []
