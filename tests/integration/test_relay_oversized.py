"""One notification too large to read (past `max_response_bytes`, 64 KiB in the test settings) does not
stop that account's cursor: catch-up asks for smaller pages, skips that one notification by its id, and
relays the ones after it (issue 10)."""

from __future__ import annotations

from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.relay_support import Harness, cursor_is
from tests.waiting import wait_until

HUGE = "y" * (100 * 1024)


async def test_catch_up_skips_a_notification_too_large_to_read_and_relays_the_rest(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "bob")
    gts.notify("alice", "mention", "bob", status_text="before the huge one")
    gts.notify("alice", "mention", "mallory", status_text=HUGE)
    after = gts.notify("alice", "mention", "carol", status_text="after the huge one")
    account = await h.add_account(gts, "alice", cursor=start["id"])

    await h.manager().start()

    await wait_until(lambda: cursor_is(h, account.id, after["id"]), what="the cursor past the huge one")
    bodies = h.sender.bodies()
    assert sum("before the huge one" in b for b in bodies) == 1
    assert sum("after the huge one" in b for b in bodies) == 1
    assert not any("mallory" in b for b in bodies)


async def test_a_first_start_on_a_huge_newest_notification_begins_after_it(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    huge = gts.notify("alice", "mention", "mallory", status_text=HUGE)
    account = await h.add_account(gts, "alice")  # no cursor: start at the newest, relaying no backlog
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: cursor_is(h, account.id, huge["id"]), what="the cursor at the huge one")
    await wait_until(lambda: manager.live_streams == 1, what="the stream open")

    later = gts.notify("alice", "mention", "carol", status_text="a normal one")
    await wait_until(lambda: cursor_is(h, account.id, later["id"]), what="the next one relayed")
    assert [b for b in h.sender.bodies() if "a normal one" in b]
    assert not any("mallory" in b for b in h.sender.bodies())
