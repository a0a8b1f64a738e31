"""Relay memory is bounded in bytes, not only in count (issue 10, item 3): big notifications on the
stream while delivery is blocked stop being read once the byte budgets are used, and all arrive later."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest
from aiohttp import web

from bot.fediverse.streaming import build_stream_connector
from bot.relay.tuning import RelayTuning
from tests.fakes.gotosocial import AKKOMA, GOTOSOCIAL, ICESHRIMP, MASTODON, FakeGoToSocial, Profile
from tests.integration.fedi_support import fedi_client, loopback, serve, settings
from tests.integration.relay_support import FAST, Harness, cursor_is
from tests.waiting import wait_until

BUDGET = 64 * 1024
BIG = 24_000  # characters of status text: each notification holds ~25 KiB parsed (`retained_bytes`)


async def test_big_notifications_stop_being_read_when_the_byte_budgets_are_used(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.gate = asyncio.Event()  # the homeserver holds the first send: delivery cannot drain
    # Counts that would let the whole flood in; only the byte budgets hold it back.
    tuning = dataclasses.replace(
        FAST,
        page_limit=2,  # (pages of such notifications stay under the test client's response limit)
        stream_buffer=500,
        max_pending=1_000,
        stream_buffer_bytes=BUDGET,
        max_pending_bytes=BUDGET,
    )
    manager = h.manager(tuning=tuning)
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    flood = [gts.notify("alice", "mention", "bob", status_text=f"flood {i} " + "x" * BIG) for i in range(30)]
    await wait_until(lambda: len(h.sender.attempts) == 1, what="first send")
    # A positive marker: both budgets are (nearly) used, so the relay has taken what it may.
    await wait_until(lambda: manager.queued_bytes >= BUDGET + BUDGET // 2, what="the budgets used")
    queued, queued_bytes = manager.queued_notifications, manager.queued_bytes
    # Each budget may be passed by one item, and the blocked send carries its batch (already formatted).
    assert queued_bytes <= 2 * BUDGET + 2 * 64 * 1024
    assert queued <= 10, queued

    h.sender.gate.set()
    await wait_until(lambda: cursor_is(h, account.id, flood[-1]["id"]), what="all delivered")
    seen = [int(n) for n in re.findall(r"flood (\d+)\b", "\n".join(h.sender.bodies()))]
    assert seen == list(range(30))
    assert manager.queued_bytes == 0


TYPICAL_BYTES = 3 * 1024  # a mention kept in memory; the server's JSON of it is ~2 kB
BURST = 100  # the burst benchmark's (b): 100 notifications for one user at 10/s


@pytest.mark.parametrize("profile", [GOTOSOCIAL, MASTODON, AKKOMA, ICESHRIMP], ids=lambda p: p.name)
async def test_a_typical_mention_is_kept_in_a_few_kilobytes(profile: Profile) -> None:
    """What a queued notification costs is what the bot keeps of it, so the default per-user queue
    holds a whole burst."""
    async with FakeGoToSocial(profile=profile) as gts, fedi_client() as client:
        gts.add_user("alice")
        gts.notify("alice", "mention", "bob@remote.example", status_text="@alice the herons are back!")
        page = await client.notifications(loopback(gts.port), gts.issue_token("alice"))
    (mention,) = page.items
    assert mention.status is not None
    assert "herons" in mention.status.content
    assert mention.status.account is mention.account  # the author is kept once
    assert len(mention.status.content) < mention.retained_bytes <= TYPICAL_BYTES
    assert RelayTuning().max_pending_bytes // mention.retained_bytes >= BURST


async def test_the_stream_asks_for_no_compression() -> None:
    """A compressed stream costs inflate buffers per connection (and a bomb needs compression)."""
    offered: list[str | None] = []

    async def streaming(request: web.Request) -> web.WebSocketResponse:
        offered.append(request.headers.get("Sec-WebSocket-Extensions"))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/streaming", streaming)
    async with serve(app) as port:
        stream = build_stream_connector(settings()).stream(loopback(port), "TOKEN")
        await stream.connect()
        await stream.aclose()
    assert offered == [None]
