"""The relay and the user's DM room over loopback: messages follow the DM when it changes, a message the
room refuses for good does not block the queue, leaving the DM suspends relaying (nothing lost), a late
401 for an old token does not break a reconnected account, and forget-me drops the user's queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest

from bot.matrix.errors import MatrixForbidden, error_from_response
from bot.observability.metrics import Metrics
from bot.relay.delivery import txn_id_for
from bot.store.models import AccountState
from bot.store.outbox import OutboxRepository
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.relay_support import FAST, Harness, cursor_is
from tests.integration.router_support import flows_for
from tests.waiting import wait_until

DM = "!dm:example.org"
NEW_DM = "!new:example.org"


def forbidden_in(room: str) -> Callable[[str, str], Exception | None]:
    def refuse(room_id: str, body: str) -> Exception | None:
        return MatrixForbidden("You are not in this room.", "M_FORBIDDEN", 403) if room_id == room else None

    return refuse


def failed_count(metrics: Metrics, type_: str) -> float:
    text = metrics.render()[0].decode()
    prefix = f'gtsbot_notifications_failed_total{{type="{type_}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_a_message_refused_by_the_old_dm_goes_to_the_new_dm_with_the_same_txn_id(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.refuse = forbidden_in(DM)  # the bot was kicked from the old DM
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="follows the dm")
    await wait_until(lambda: len(h.sender.attempts) >= 1, what="refused send")
    assert h.sender.events == []

    await h.set_dm(account.matrix_user_id, NEW_DM)
    manager.dm_room_changed(account.matrix_user_id)
    await wait_until(lambda: cursor_is(h, account.id, n["id"]), what="delivered to the new dm")
    assert [(e.room_id, e.txn_id) for e in h.sender.events] == [(NEW_DM, txn_id_for([(account.id, n["id"])]))]
    assert "follows the dm" in h.sender.events[0].body
    assert await h.outbox() == []


async def test_a_message_too_large_for_the_room_is_dropped_with_a_reference_and_the_queue_moves_on(
    gts: FakeGoToSocial, h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])

    def too_large(room_id: str, body: str) -> Exception | None:
        return error_from_response("event too large", "M_TOO_LARGE", 413) if "HUGE" in body else None

    h.sender.refuse = too_large
    metrics = Metrics(version="0")
    manager = h.manager(metrics=metrics)
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    with caplog.at_level(logging.ERROR, logger="bot.relay.delivery"):
        gts.notify("alice", "mention", "bob", status_text="HUGE")
        await wait_until(lambda: len(h.sender.attempts) >= 1, what="refused send")
        fine = gts.notify("alice", "mention", "carol", status_text="small and fine")
        await wait_until(lambda: cursor_is(h, account.id, fine["id"]), what="the queue moved on")
    assert [e.body for e in h.sender.events if "HUGE" in e.body] == []
    assert "small and fine" in h.sender.events[-1].body
    assert sum("HUGE" in a.body for a in h.sender.attempts) == 1  # not retried
    assert any("cannot be delivered" in r.getMessage() and "ref " in r.getMessage() for r in caplog.records)
    assert failed_count(metrics, "mention") == 1
    assert await h.outbox() == []


async def test_the_current_dm_refusing_for_good_drops_the_message_after_a_few_looks(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.refuse = forbidden_in(DM)
    manager = h.manager(tuning=dataclasses.replace(FAST, forbidden_retries=2))
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    stuck = gts.notify("alice", "mention", "bob", status_text="never arrives")
    await wait_until(lambda: cursor_is(h, account.id, stuck["id"]), what="given up")
    assert len(h.sender.attempts) == 3  # the first try and two more looks at the same DM
    assert h.sender.events == []
    assert await h.outbox() == []

    h.sender.refuse = None  # the next message is not stuck behind it
    later = gts.notify("alice", "mention", "carol", status_text="arrives")
    await wait_until(lambda: cursor_is(h, account.id, later["id"]))
    assert "arrives" in h.sender.events[0].body


async def test_suspend_user_stops_relaying_and_a_new_dm_resumes_without_loss(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    user = account.matrix_user_id
    h.sender.gate = asyncio.Event()
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    queued = [gts.notify("alice", "mention", "bob", status_text="queued 0")]
    await wait_until(lambda: len(h.sender.attempts) == 1, what="the first send, held by the homeserver")
    queued += [gts.notify("alice", "mention", "bob", status_text=f"queued {i}") for i in (1, 2)]
    await wait_until(lambda: manager.queued_notifications == 3, what="one sending, two queued")

    await h.set_dm(user, None)  # the router: the user left the DM
    await manager.suspend_user(user)
    assert manager.live_streams == 0
    assert manager.account_mode(account.id) is None
    assert manager.queued_notifications == 1  # only the message already in the outbox
    assert (await h.account(account.id)).state is AccountState.ACTIVE
    await wait_until(lambda: gts.open_streams("alice") == 0)
    h.sender.gate.set()  # the send in flight when the user left completes
    await wait_until(lambda: cursor_is(h, account.id, queued[0]["id"]), what="in-flight send")
    meanwhile = gts.notify("alice", "mention", "carol", status_text="while suspended")

    await h.set_dm(user, NEW_DM)  # the router: a new DM was recorded
    manager.dm_room_changed(user)
    await wait_until(lambda: cursor_is(h, account.id, meanwhile["id"]), what="resumed")
    # Nothing was sent while suspended: every send after the held one went to the new DM.
    assert [a.room_id for a in h.sender.attempts[1:]] == [NEW_DM] * (len(h.sender.attempts) - 1)
    later = [e for e in h.sender.events if e.room_id == NEW_DM]
    text = "\n".join(e.body for e in later)
    assert [text.count(t) for t in ("queued 1", "queued 2", "while suspended")] == [1, 1, 1]
    assert "queued 0" not in text
    await wait_until(lambda: gts.open_streams("alice") == 1, what="streaming again")


async def test_outbox_messages_of_a_suspended_user_wait_for_the_next_dm(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    h.sender.refuse = forbidden_in(DM)  # the bot was kicked from its DM
    manager = h.manager(tuning=dataclasses.replace(FAST, forbidden_retries=100))
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="waits in the outbox")
    await wait_until(lambda: len(h.sender.attempts) >= 1, what="refused")
    await h.set_dm(account.matrix_user_id, None)
    await manager.suspend_user(account.matrix_user_id)
    attempts, looks = len(h.sender.attempts), h.naps.count(FAST.no_room_retry)
    # Delivery looks for a DM room again and again (its injected sleep counts the looks) ...
    await wait_until(lambda: h.naps.count(FAST.no_room_retry) >= looks + 3, what="three more looks for a DM")
    assert len(h.sender.attempts) == attempts  # ... and, finding none, holds: no retry into the old room
    assert len(await h.outbox()) == 1

    await h.set_dm(account.matrix_user_id, NEW_DM)
    manager.dm_room_changed(account.matrix_user_id)
    await wait_until(lambda: cursor_is(h, account.id, n["id"]))
    assert [e.room_id for e in h.sender.events] == [NEW_DM]


async def test_a_late_401_for_an_old_token_does_not_break_a_reconnected_account(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    # The user reconnected: a new token is stored (ACTIVE), and only then is the old one revoked, as the
    # connect flow does. Revoking first would leave a window in which the stored token really is dead, and
    # a stream drop on a busy machine inside it would rightly mark the account broken.
    await h.add_account(gts, "alice")
    gts.state.forget_token(account.token)
    gts.drop_streams()  # the old relay, still on the old token, meets a 401
    await wait_until(lambda: manager.account_mode(account.id) is None, what="the old relay ended")
    assert (await h.account(account.id)).state is AccountState.ACTIVE
    assert h.notified.calls == []

    await manager.restart_account(account.id)  # what the connect flow's on_connected does
    await wait_until(lambda: gts.open_streams("alice") == 1)
    n = gts.notify("alice", "mention", "bob", status_text="new token works")
    await wait_until(lambda: cursor_is(h, account.id, n["id"]))
    assert (await h.account(account.id)).state is AccountState.ACTIVE


async def test_forget_user_drops_the_users_queue_and_outbox_and_nothing_else(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    bob = await h.add_account(gts, "bob", cursor="0")
    h.sender.gate = asyncio.Event()
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams() == 2)
    gts.notify("alice", "mention", "carol", status_text="alice 0")
    gts.notify("bob", "mention", "carol", status_text="bob's")
    await wait_until(lambda: len(h.sender.attempts) == 2, what="alice's and bob's first sends, held")
    for i in (1, 2):
        gts.notify("alice", "mention", "carol", status_text=f"alice {i}")
    await wait_until(lambda: manager.queued_notifications == 4, what="queued")

    await manager.forget_user(account.matrix_user_id)
    assert manager.account_mode(account.id) is None
    assert manager.account_mode(bob.id) == "streaming"
    assert manager.queued_notifications == 1

    async def only_bobs_row() -> bool:  # bob's batch may still be on its way into the outbox
        return [r.matrix_user_id for r in await h.outbox()] == [bob.matrix_user_id]

    await wait_until(only_bobs_row, what="only bob's message in the outbox")
    h.sender.gate.set()
    await wait_until(lambda: _outbox_empty(h), what="bob's message sent")
    # alice's delivery was stopped (and awaited) by forget_user, so her held send can never complete
    assert [e.body for e in h.sender.events if "alice" in e.body] == []
    assert any("bob's" in e.body for e in h.sender.events)


async def test_outbox_delete_for_user_deletes_only_that_users_messages(h: Harness) -> None:
    async with h.sessions() as s, s.begin():
        outbox = OutboxRepository(s, h.keyring)
        for user, txn in (("@a:x", "t1"), ("@b:x", "t2"), ("@a:x", "t3")):
            await outbox.add(matrix_user_id=user, room_id="!r:x", txn_id=txn, body="b", html="h", cursors={})
    async with h.sessions() as s, s.begin():
        assert await OutboxRepository(s).delete_for_user("@a:x") == 2
        assert await OutboxRepository(s).delete_for_user("@nobody:x") == 0
    assert [r.txn_id for r in await h.outbox()] == ["t2"]


async def _outbox_empty(h: Harness) -> bool:
    return await h.outbox() == []


async def test_a_new_dm_during_a_slow_revoke_does_not_restart_the_account(
    gts: FakeGoToSocial, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    manager = h.manager()
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    _, accounts = flows_for(h.sessions, h.keyring, h.client, manager)
    revoking, release = asyncio.Event(), asyncio.Event()
    real_revoke = h.client.revoke

    async def slow_revoke(*args: Any, **kwargs: Any) -> None:
        revoking.set()
        await release.wait()
        await real_revoke(*args, **kwargs)

    monkeypatch.setattr(h.client, "revoke", slow_revoke)  # the instance is slow to answer the revoke
    revoke = asyncio.create_task(accounts.revoke(account.matrix_user_id, None))
    await revoking.wait()
    assert manager.account_mode(account.id) is None
    await h.set_dm(account.matrix_user_id, NEW_DM)  # an invite records a new DM meanwhile
    await manager.resume_user(account.matrix_user_id)  # what dm_room_changed starts
    assert manager.account_mode(account.id) is None
    release.set()
    await revoke
    await manager.resume_user(account.matrix_user_id)  # and once the account is gone, nothing either
    assert manager.account_mode(account.id) is None
    assert manager.live_streams == 0
    await wait_until(lambda: gts.open_streams("alice") == 0, what="the stream closed")


async def test_nothing_is_relayed_into_a_dm_that_is_no_longer_private(
    gts: FakeGoToSocial, h: Harness
) -> None:
    gts.add_user("alice")
    start = gts.notify("alice", "follow", "zed")
    account = await h.add_account(gts, "alice", cursor=start["id"])
    private = {DM: True}
    checked: list[str] = []

    async def room_check(user: str, room: str) -> bool:
        checked.append(room)
        return private.get(room, False)

    manager = h.manager(room_check=room_check)
    await manager.start()
    await wait_until(lambda: gts.open_streams("alice") == 1)
    first = gts.notify("alice", "mention", "bob", status_text="while private")
    await wait_until(lambda: cursor_is(h, account.id, first["id"]), what="delivered")

    private[DM] = False  # eve joined the DM between two notifications
    gts.notify("alice", "mention", "carol", status_text="eve must not see this")
    await wait_until(lambda: len(checked) >= 3, what="the room checked again before the send")
    assert [e.body for e in h.sender.events if "eve must not" in e.body] == []
    assert len(h.sender.attempts) == 1

    await h.set_dm(account.matrix_user_id, NEW_DM)  # a new private DM: the held message goes there
    private[NEW_DM] = True
    manager.dm_room_changed(account.matrix_user_id)
    await wait_until(lambda: len(h.sender.events) == 2, what="delivered to the new DM")
    assert h.sender.events[-1].room_id == NEW_DM
    assert "eve must not see this" in h.sender.events[-1].body
