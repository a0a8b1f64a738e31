"""The relay end to end over loopback: FakeGoToSocial → RelayManager → a recording Matrix sender, with a
real database (SQLite and PostgreSQL through the `sessions` fixture)."""

from __future__ import annotations

from bot.relay.delivery import txn_id_for
from bot.store.models import AccountState
from bot.store.records import AccountId
from bot.store.repositories import Repositories
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.relay_support import Harness, cursor_is
from tests.waiting import wait_until


async def test_a_live_notification_arrives_over_the_stream_and_commits_the_cursor(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    first = gts.notify("alice", "follow", "bob")
    account = await h.add_account(gts, "alice", cursor=first["id"])
    manager = h.manager()
    await manager.start()
    # the server sees the socket open a moment before the relay counts it as live
    await wait_until(
        lambda: gts.open_streams("alice") == 1 and manager.live_streams == 1, what="stream open on both ends"
    )
    assert manager.account_mode(account.id) == "streaming"

    n = gts.notify("alice", "mention", "carol", status_text="hello over the stream")
    await wait_until(lambda: len(h.sender.events) == 1, what="delivery")
    event = h.sender.events[0]
    assert "hello over the stream" in event.body
    assert event.room_id == "!dm:example.org"
    assert event.txn_id == txn_id_for([(account.id, n["id"])])
    await wait_until(lambda: cursor_is(h, account.id, n["id"]), what="cursor commit")
    assert await h.outbox() == []


async def test_first_start_begins_at_the_newest_notification_without_a_backlog(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    backlog = [gts.notify("alice", "mention", "bob", status_text=f"old {i}") for i in range(5)]
    account = await h.add_account(gts, "alice")  # cursor NULL: never relayed before
    await h.manager().start()
    await wait_until(lambda: cursor_is(h, account.id, backlog[-1]["id"]), what="cursor at newest")
    await wait_until(lambda: gts.open_streams("alice") == 1)
    gts.notify("alice", "mention", "bob", status_text="new one")
    await wait_until(lambda: len(h.sender.events) >= 1)
    assert h.sender.bodies() == [h.sender.events[0].body]
    assert "new one" in h.sender.events[0].body
    assert "old" not in h.sender.events[0].body


async def test_first_start_on_an_account_without_notifications_relays_the_first_one(
    gts: FakeGoToSocial, h: Harness
) -> None:
    account = await h.add_account(gts, "alice")
    await h.manager().start()
    await wait_until(lambda: cursor_is(h, account.id, "0"), what="start cursor")
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "follow", "bob")
    await wait_until(lambda: len(h.sender.events) == 1)
    await wait_until(lambda: cursor_is(h, account.id, n["id"]))


async def test_catch_up_after_the_stream_drops_delivers_the_missed_ones_exactly_once(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    await h.manager().start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    gts.notify("alice", "mention", "bob", status_text="before the drop")
    await wait_until(lambda: len(h.sender.events) == 1)

    gts.faults.streaming_enabled = False  # the reconnect fails until we allow it again
    assert gts.drop_streams() == 1
    await wait_until(lambda: gts.open_streams("alice") == 0)
    missed = [gts.notify("alice", "mention", "bob", status_text=f"missed {i}") for i in range(3)]
    gts.faults.streaming_enabled = True
    await wait_until(lambda: cursor_is(h, account.id, missed[-1]["id"]), what="catch-up commit")
    text = "\n".join(h.sender.bodies())
    for i in range(3):
        assert text.count(f"missed {i}") == 1
    assert text.count("before the drop") == 1
    assert len(h.sender.attempts) == len(h.sender.events)  # nothing was sent twice


async def test_a_failed_send_keeps_the_cursor_and_the_notification_arrives_after_recovery(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.fail = True
    await h.manager().start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="survives the outage")
    await wait_until(lambda: len(h.sender.attempts) >= 2, what="retries")
    assert (await h.account(account.id)).cursor == start["id"]
    assert [r.txn_id for r in await h.outbox()] == [txn_id_for([(account.id, n["id"])])]

    h.sender.fail = False
    await wait_until(lambda: len(h.sender.events) == 1)
    assert "survives the outage" in h.sender.events[0].body
    assert {a.txn_id for a in h.sender.attempts} == {h.sender.events[0].txn_id}  # same txn id each time
    await wait_until(lambda: cursor_is(h, account.id, n["id"]))
    assert await h.outbox() == []


async def test_a_crash_between_send_and_commit_resends_with_the_same_txn_id(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.hang_after_record = True  # the event reaches the room, the bot never learns it did
    first = h.manager()
    await first.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="exactly once")
    await wait_until(lambda: len(h.sender.events) == 1)
    await first.stop()  # the "crash": the send never returned, the cursor was not committed
    assert (await h.account(account.id)).cursor == start["id"]
    assert len(await h.outbox()) == 1

    h.sender.hang_after_record = False
    await h.manager().start()
    await wait_until(lambda: cursor_is(h, account.id, n["id"]), what="commit after restart")
    assert await h.outbox() == []
    assert [a.txn_id for a in h.sender.attempts] == [txn_id_for([(account.id, n["id"])])] * 2
    assert len(h.sender.events) == 1  # the homeserver dropped the repeat; the user saw it once
    await wait_until(lambda: gts.open_streams("alice") == 1)
    gts.notify("alice", "follow", "dora")
    await wait_until(lambda: len(h.sender.events) == 2)
    assert "exactly once" not in h.sender.events[1].body


async def test_a_rejected_token_marks_the_account_broken_tells_the_user_once_and_reconnect_resumes(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    gts.revoke_all("alice")
    gts.drop_streams()  # the reconnect meets the 401
    await wait_until(lambda: _state_is(h, account.id, AccountState.BROKEN), what="broken")
    await wait_until(lambda: len(h.notified.calls) == 1)
    user, plain, html = h.notified.calls[0]
    assert user == account.matrix_user_id
    assert plain == (
        f"Your account @alice@{gts.host} stopped working (the server rejected the token; it may have been "
        f"revoked). Reconnect with !gts connect {gts.host}"
    )
    assert "<code>!gts connect" in html
    await wait_until(lambda: manager.live_streams == 0 and manager.account_mode(account.id) is None)
    assert gts.open_streams("alice") == 0

    missed = gts.notify("alice", "mention", "bob", status_text="while broken")
    await h.add_account(gts, "alice")  # connected again: new token, state ACTIVE, cursor kept
    await manager.restart_account(account.id)
    await wait_until(lambda: len(h.sender.events) == 1, what="resumed delivery")
    assert "while broken" in h.sender.events[0].body
    await wait_until(lambda: cursor_is(h, account.id, missed["id"]))
    assert len(h.notified.calls) == 1


async def _state_is(h: Harness, account_id: AccountId, state: AccountState) -> bool:
    return (await h.account(account_id)).state is state


async def test_remove_account_closes_the_stream_before_returning(gts: FakeGoToSocial, h: Harness) -> None:
    account = await h.add_account(gts, "alice", cursor="0")
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    await manager.remove_account(account.id)
    assert manager.live_streams == 0
    assert manager.account_mode(account.id) is None
    await wait_until(lambda: gts.open_streams("alice") == 0, what="server saw the close")
    gts.notify("alice", "mention", "bob")
    await manager.restart_account(AccountId(account.id + 1000))  # unknown ids are ignored
    assert h.sender.attempts == []


async def test_no_dm_room_keeps_the_cursor_until_one_is_recorded(gts: FakeGoToSocial, h: Harness) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"], dm_room=None)
    await h.manager().start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="waits for a room")
    await wait_until(lambda: gts.requests_to("/api/v1/notifications") >= 1)
    assert (await h.account(account.id)).cursor == start["id"]
    assert h.sender.attempts == []
    async with h.sessions() as s, s.begin():
        await Repositories(s, h.keyring).dm_rooms.set(account.matrix_user_id, "!late:example.org")
    await wait_until(lambda: len(h.sender.events) == 1)
    assert h.sender.events[0].room_id == "!late:example.org"
    await wait_until(lambda: cursor_is(h, account.id, n["id"]))


async def test_stop_closes_every_stream(gts: FakeGoToSocial, h: Harness) -> None:
    await h.add_account(gts, "alice", cursor="0")
    await h.add_account(gts, "bob", cursor="0")
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams() == 2)
    await manager.stop()
    assert manager.live_streams == 0
    await wait_until(lambda: gts.open_streams() == 0)


async def test_a_notification_seen_by_both_the_stream_and_the_catch_up_is_delivered_once(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    gts.faults.delay = 0.5  # the catch-up request is slow: what arrives meanwhile comes both ways
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="seen twice, sent once")
    await wait_until(lambda: cursor_is(h, account.id, n["id"]), what="delivery")
    gts.faults.delay = 0.0
    later = gts.notify("alice", "follow", "carol")
    await wait_until(lambda: cursor_is(h, account.id, later["id"]))
    assert "\n".join(h.sender.bodies()).count("seen twice, sent once") == 1
