"""Pure relay policies: backoff, the per-instance circuit breaker, transaction ids, outbox cursor text."""

from __future__ import annotations

import asyncio
import random

import pytest

from bot.matrix.errors import error_from_response, is_permanent_send_failure, is_room_refusal
from bot.relay.backoff import Backoff
from bot.relay.breaker import BreakerRegistry, BreakerState, CircuitBreaker
from bot.relay.delivery import DeliveryItem, UserDelivery, txn_id_for
from bot.relay.manager import broken_message
from bot.relay.tuning import RelayTuning
from bot.store.outbox import format_cursors, parse_cursors
from bot.store.records import AccountId
from tests.fakes.delivery import MemoryStore
from tests.fakes.matrix import RecordingMatrix
from tests.waiting import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_to_its_cap_and_jitter_only_lengthens() -> None:
    backoff = Backoff(base=1.0, cap=300.0, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert 1.0 <= delays[0] <= 1.2
    assert 2.0 <= delays[1] <= 2.4
    assert all(300.0 <= d <= 360.0 for d in delays[9:])
    assert 3600 / min(delays[9:]) <= 12  # a failing account: at most 12 attempts an hour
    backoff.reset()
    assert backoff.next_delay() <= 1.2


def test_backoff_refuses_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=5.0, cap=1.0, rng=random.Random())


def test_breaker_opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("a.example", threshold=3, cooldown=10.0, max_cooldown=40.0, clock=clock)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire() == 0
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.try_acquire() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.try_acquire() == 0  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.try_acquire() > 0  # everyone else waits for the probe
    breaker.record_failure()  # the probe failed: open again, for longer
    assert breaker.state is BreakerState.OPEN
    assert breaker.try_acquire() == pytest.approx(20.0)
    clock.now += 20.0
    assert breaker.try_acquire() == 0
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire() == 0


def test_a_half_open_probe_that_never_reports_expires() -> None:
    clock = Clock()
    breaker = CircuitBreaker("a.example", threshold=1, cooldown=5.0, clock=clock)
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.try_acquire() == 0
    assert breaker.try_acquire() > 0
    clock.now += 6.0
    assert breaker.try_acquire() == 0  # the first probe was cancelled without a result


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("a.example", threshold=2, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


async def test_waiters_wake_when_the_probe_succeeds() -> None:
    clock = Clock()
    breaker = CircuitBreaker("a.example", threshold=1, cooldown=100.0, clock=clock)
    breaker.record_failure()
    clock.now += 100.0
    await breaker.acquire()  # this task is the probe
    waiter = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    breaker.record_success()
    await asyncio.wait_for(waiter, 60)


def test_breakers_are_per_instance_and_report_how_many_are_open() -> None:
    seen: list[int] = []
    registry = BreakerRegistry(
        threshold=1, cooldown=5.0, max_cooldown=10.0, clock=Clock(), on_change=seen.append
    )
    a = registry.get("https://a.example", "a.example")
    assert registry.get("https://a.example", "a.example") is a
    b = registry.get("https://b.example", "b.example")
    a.record_failure()
    assert registry.open_count == 1
    assert b.try_acquire() == 0
    a.record_success()
    assert registry.open_count == 0
    assert seen == [1, 0]


def test_txn_ids_are_derived_from_account_and_notification_ids() -> None:
    one = txn_id_for([(AccountId(3), "01ABC")])
    assert one == "gts.3.01ABC" == txn_id_for([(AccountId(3), "01ABC")])
    assert txn_id_for([(AccountId(4), "01ABC")]) != one
    group = txn_id_for([(AccountId(3), "1"), (AccountId(3), "2")])
    assert group == txn_id_for([(AccountId(3), "2"), (AccountId(3), "1")])
    assert group.startswith("gts.g.")
    assert len(group) <= 128
    assert group != txn_id_for([(AccountId(3), "1"), (AccountId(3), "3")])


def test_outbox_cursor_text_round_trips() -> None:
    cursors = {AccountId(12): "01ABC", AccountId(3): "100"}
    assert format_cursors(cursors) == "3:100 12:01ABC"
    assert parse_cursors(format_cursors(cursors)) == cursors
    assert parse_cursors("") == {}
    assert parse_cursors("x:1 5:") == {}


def test_the_broken_account_message_says_how_to_reconnect() -> None:
    plain, html = broken_message("a@b.example", "b.example", "rejected", "!gts")
    assert plain == (
        "Your account @a@b.example stopped working (the server rejected the token; it may have been "
        "revoked). Reconnect with !gts connect b.example"
    )
    assert "<code>!gts connect b.example</code>" in html
    plain, html = broken_message("<x>@b", "b", "scope", "!gts")
    assert "not allowed to read notifications" in plain
    assert "&lt;x&gt;" in html


@pytest.mark.parametrize(
    ("error", "permanent", "room"),
    [
        (error_from_response("not in room", "M_FORBIDDEN", 403), True, True),
        (error_from_response("unknown room", "M_NOT_FOUND", 404), True, True),
        (error_from_response("event too large", "M_TOO_LARGE", 413), True, False),
        (error_from_response("too large", None, 413), True, False),
        (error_from_response("forbidden", None, 403), True, True),
        (error_from_response("slow down", "M_LIMIT_EXCEEDED", 429, 1000), False, False),
        (error_from_response("server error", "M_UNKNOWN", 500), False, False),
        (error_from_response("bad gateway", None, 502), False, False),
        (OSError("connection reset"), False, False),
    ],
)
def test_send_failures_that_repeating_cannot_fix_are_permanent(
    error: Exception, permanent: bool, room: bool
) -> None:
    assert is_permanent_send_failure(error) is permanent
    assert is_room_refusal(error) is room


async def test_a_users_queue_holds_relays_back_at_max_pending_until_there_is_room() -> None:
    """The memory bound behind back-pressure, with the shipped tuning: relays hand over freely below
    `max_pending`, wait at it, and go on as soon as the queue shrinks."""
    tuning = RelayTuning()
    delivery = UserDelivery(
        "@alice:example.org",
        store=MemoryStore(),
        sender=RecordingMatrix(),
        tuning=tuning,
        metrics=None,
        rng=random.Random(1),
    )

    def items(first: int, count: int) -> list[DeliveryItem]:
        return [
            DeliveryItem(AccountId(1), str(i), "mention", {}, "social.example", None)
            for i in range(first, first + count)
        ]

    delivery.submit(items(0, tuning.max_pending - 1))
    assert not delivery.full
    await asyncio.wait_for(delivery.wait_for_capacity(), 60)  # room for one more: no wait

    delivery.submit(items(tuning.max_pending - 1, 1))
    assert delivery.full
    waiting = asyncio.create_task(delivery.wait_for_capacity())
    await wait_until(lambda: delivery.relays_waiting == 1, what="the relay waiting for room")
    assert delivery.backlog == tuning.max_pending

    await delivery.forget(AccountId(1))  # the queue shrinks (here: the account's items are dropped)
    await asyncio.wait_for(waiting, 60)
    assert delivery.relays_waiting == 0
