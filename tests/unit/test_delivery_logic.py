"""Delivery logic against an in-memory `DeliveryStorage`: no SQLAlchemy, no database."""

from __future__ import annotations

import asyncio
import random

from bot.fediverse.models import parse_notification
from bot.matrix.errors import error_from_response
from bot.relay.delivery import DeliveryItem, UserDelivery, txn_id_for
from bot.relay.tuning import RelayTuning
from bot.store.records import AccountId
from tests.fakes.delivery import MemoryStore
from tests.fakes.matrix import RecordingMatrix

ACCOUNT = AccountId(7)


def refuse_huge(room_id: str, body: str) -> Exception | None:
    return error_from_response("too large", "M_TOO_LARGE", 413) if "HUGE" in body else None


def mention(nid: str, text: str, *, relay: bool = True) -> DeliveryItem:
    notification = {
        "id": nid, "type": "mention", "created_at": "2026-12-01T10:00:00.000Z",
        "account": {
            "id": "1", "username": "bob", "acct": "bob@remote.example", "display_name": "Bob", "url": "https://remote.example/@bob",
        },
        "status": {"id": f"s{nid}", "content": f"<p>{text}</p>", "url": f"https://remote.example/s/{nid}",
                   "visibility": "public", "spoiler_text": "", "sensitive": False},
    }
    return DeliveryItem(
        ACCOUNT, nid, "mention", parse_notification(notification), "gts.example", None, relay=relay
    )


async def deliver(store: MemoryStore, sender: RecordingMatrix, items: list[DeliveryItem]) -> None:
    delivery = UserDelivery(
        "@alice:example.net", store=store, sender=sender, tuning=RelayTuning(), metrics=None,
        rng=random.Random(1),
    )
    worker = asyncio.create_task(delivery.run())
    try:
        delivery.submit(items)
        await asyncio.wait_for(delivery.wait_drained(), timeout=60)
    finally:
        worker.cancel()


async def test_each_message_carries_its_transaction_id_and_the_last_one_moves_the_cursor() -> None:
    store, sender = MemoryStore(), RecordingMatrix()
    await deliver(store, sender, [mention("01A", "first")])
    await deliver(store, sender, [mention("01B", "second")])
    assert ["first" in body for body in sender.bodies()] == [True, False]
    assert ["second" in body for body in sender.bodies()] == [False, True]
    assert [sent.txn_id for sent in sender.events] == [
        txn_id_for([(ACCOUNT, "01A")]), txn_id_for([(ACCOUNT, "01B")])
    ]
    assert store.cursors == {ACCOUNT: "01B"}
    assert store.outbox == []


async def test_filtered_out_notifications_move_the_cursor_and_send_nothing() -> None:
    store, sender = MemoryStore(), RecordingMatrix()
    await deliver(store, sender, [mention("01A", "muted", relay=False)])
    assert sender.events == []
    assert store.cursors == {ACCOUNT: "01A"}


async def test_a_message_the_room_refuses_for_size_is_dropped_and_the_cursor_moves_past_it() -> None:
    store, sender = MemoryStore(), RecordingMatrix(refuse=refuse_huge)
    await deliver(store, sender, [mention("01A", "HUGE")])
    await deliver(store, sender, [mention("01B", "fits")])
    assert [body for body in sender.bodies() if "HUGE" in body] == []
    assert any("fits" in body for body in sender.bodies())
    assert store.cursors == {ACCOUNT: "01B"}


def favourite(nid: str, who: str) -> DeliveryItem:
    notification = {
        "id": nid, "type": "favourite", "created_at": "2026-12-01T10:00:00.000Z",
        "account": {"id": who, "username": who, "acct": f"{who}@remote.example", "display_name": who,
                    "url": f"https://remote.example/@{who}"},
        "status": {"id": "mine", "content": "<p>my post</p>", "url": "https://gts.example/s/mine",
                   "visibility": "public", "spoiler_text": "", "sensitive": False},
    }  # fmt: skip
    return DeliveryItem(ACCOUNT, nid, "favourite", parse_notification(notification), "gts.example", None)


async def test_a_message_showing_one_notification_is_mapped_to_it_a_grouped_one_is_not() -> None:
    store, sender = MemoryStore(), RecordingMatrix()
    await deliver(store, sender, [mention("01A", "first")])
    await deliver(store, sender, [favourite("01B", "carol"), favourite("01C", "dave")])
    assert len(sender.events) == 2  # the two favourites share one message
    [(event_id, target)] = store.mapped.items()
    assert event_id == "$event1"
    assert (target.account_id, target.notification_id, target.status_id) == (ACCOUNT, "01A", "s01A")
