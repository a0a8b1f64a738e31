"""Delivery under Synapse's message limiter, on virtual time: the burst used as it is there, each 429's
`retry_after_ms` honoured, everything waiting folded into the message the limiter allows, command replies
ahead of relays, and nothing lost or sent twice. The homeserver is `LimitedMatrix`: the adapter's real
`FairSender` in front of an exact model of Synapse's leaky bucket."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from benchmarks.limit_bound import folding_bound
from bot.matrix.errors import MatrixRateLimited
from bot.matrix.types import RoomId
from bot.relay.delivery import UserDelivery, txn_id_for
from bot.relay.tuning import RelayTuning
from tests.fakes.delivery import ROOM, MemoryStore
from tests.fakes.matrix import LimitedMatrix, SynapseLimiter, VirtualTime
from tests.unit.test_delivery_logic import ACCOUNT, mention
from tests.waiting import wait_until

T0 = 1000.0
RATE = 0.25  # a message every 4 s once the bucket is full; binary-exact, so the arithmetic is exact too


class Homeserver:
    def __init__(self, burst: int = 10) -> None:
        self.time = VirtualTime()
        self.time.now = T0
        self.matrix = LimitedMatrix(self.time, rate=RATE, burst=burst)
        self.store = MemoryStore()
        self.delivery = UserDelivery(
            "@alice:example.net",
            store=self.store,
            sender=self.matrix,
            tuning=RelayTuning(),
            metrics=None,
            rng=random.Random(1),
            sleep=self.time.sleep,
        )

    def idle(self) -> bool:
        """Nothing more happens until the clock moves: all delivered, or the relay waits for the limiter."""
        sender = self.matrix.sender
        waiting = sender.blocked_for > 0 and sender.queued >= 1 and self.time.next_wake is not None
        return self.delivery.backlog == 0 or waiting

    async def note(self, k: int) -> None:
        """Notification k arrives (its text is note-k) and the bot does all it can with it now."""
        self.delivery.submit([mention(f"{k:04d}", f"note-{k:02d}")])
        await wait_until(self.idle, what=f"note {k} handled")

    async def run_clock_to(self, t: float) -> None:
        """Move virtual time to `t`, stopping at every moment the limiter allows a send on the way."""
        while (wake := self.time.next_wake) is not None and wake <= t:
            self.time.advance(wake)
            await wait_until(self.idle, what="the send the limiter allowed")
        self.time.advance(t)

    async def wait_out_the_limiter(self) -> None:
        """Let virtual time run to each moment the limiter allows, until everything is delivered."""
        while self.delivery.backlog:
            wake = self.time.next_wake
            assert wake is not None, "blocked with nobody waiting for the limiter"
            self.time.advance(wake)
            await wait_until(self.idle, what="the send the limiter allowed")

    def bodies_with(self, text: str) -> list[int]:
        return [i for i, body in enumerate(self.matrix.bodies()) if text in body]


@pytest.fixture
async def hs() -> AsyncIterator[Homeserver]:
    h = Homeserver()
    worker = asyncio.create_task(h.delivery.run())
    yield h
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)


def test_the_limiter_model_is_synapses_leaky_bucket() -> None:
    now = [T0]
    limiter = SynapseLimiter(lambda: now[0], rate=0.2, burst=10)
    for _ in range(10):
        limiter.take()
    with pytest.raises(MatrixRateLimited) as refused:
        limiter.take()
    assert refused.value.retry_after_ms == 5000
    now[0] += 4.999
    with pytest.raises(MatrixRateLimited):
        limiter.take()
    now[0] += 0.001
    limiter.take()  # one drained: one more
    now[0] += 100
    for _ in range(10):  # a drained bucket takes a whole burst again
        limiter.take()


@pytest.mark.parametrize(
    ("arrivals", "sends", "worst"),
    [
        ([float(k) for k in range(30)], [*range(12), 15, 20, 25, 30], 4.0),  # 30 at 1/s
        ([k / 10 for k in range(100)], [k / 10 for k in range(10)] + [5.0, 10.0], 4.9),  # 100 at 10/s
        ([10.0 * k for k in range(20)], [10.0 * k for k in range(20)], 0.0),  # sparse: never waits
    ],
)
def test_the_folding_bound(arrivals: list[float], sends: list[float], worst: float) -> None:
    bound = folding_bound(arrivals, rate=0.2, burst=10)
    assert list(bound.sends) == pytest.approx(sends)
    assert max(bound.latencies) == pytest.approx(worst)
    assert len(bound.latencies) == len(arrivals)


async def test_the_burst_goes_at_once_and_what_waits_folds_into_the_send_the_limiter_allows(
    hs: Homeserver,
) -> None:
    for k in range(1, 11):
        await hs.note(k)
    assert hs.matrix.accepted_at == [T0] * 10  # no spacing while the homeserver accepts
    await hs.note(11)  # refused: the bucket is full
    assert hs.matrix.sender.tracker.hits == 1
    assert hs.store.outbox == []  # the refused message was taken back, its cursor not moved
    assert hs.store.cursors == {ACCOUNT: "0010"}
    for k in range(12, 16):  # arrive while the limiter holds the sender
        await hs.note(k)
    assert len(hs.matrix.events) == 10
    assert hs.time.next_wake == pytest.approx(T0 + 4.001)  # retry_after_ms (4000) + Synapse's rounding
    await hs.wait_out_the_limiter()
    assert hs.matrix.accepted_at[10] == pytest.approx(T0 + 4.001)
    assert len(hs.matrix.events) == 11
    assert all(hs.bodies_with(f"note-{k}") == [10] for k in range(11, 16))  # one message, all five
    assert hs.matrix.sender.tracker.hits == 1  # not a single send too early
    assert hs.store.cursors == {ACCOUNT: "0015"}
    assert hs.store.outbox == []


@pytest.mark.parametrize("reply_room", [ROOM, "!bobdm:example.net"], ids=["same user", "another user"])
async def test_a_command_reply_takes_the_next_slot_ahead_of_the_waiting_relays(
    hs: Homeserver, reply_room: str
) -> None:
    for k in range(1, 15):  # ten go, the eleventh is refused, three more wait
        await hs.note(k)
    reply = asyncio.create_task(hs.matrix.send_notice(RoomId(reply_room), "status reply", ""))
    await wait_until(lambda: hs.matrix.sender.queued == 2, what="the reply queued with the relay")
    hs.time.advance(T0 + 4.001)
    await wait_until(lambda: len(hs.matrix.events) == 11 and hs.idle(), what="one send, then waiting")
    assert hs.matrix.events[10].body == "status reply"
    assert hs.matrix.accepted_at[10] == pytest.approx(T0 + 4.001)  # the first slot the limiter allows
    await hs.wait_out_the_limiter()
    assert len(hs.matrix.events) == 12
    assert all(hs.bodies_with(f"note-{k}") == [11] for k in range(11, 15))
    assert T0 + 8.0 <= hs.matrix.accepted_at[11] < T0 + 8.05  # the relays the slot after
    assert reply.done()
    assert hs.store.cursors == {ACCOUNT: "0014"}


async def test_thirty_notifications_a_second_apart_reach_the_bound_and_none_is_lost_or_doubled(
    hs: Homeserver,
) -> None:
    for k in range(30):
        await hs.run_clock_to(T0 + k)
        await hs.note(k)
    await hs.wait_out_the_limiter()
    bound = folding_bound([float(k) for k in range(30)], rate=RATE, burst=10)
    carriers = [hs.bodies_with(f"note-{k:02d}") for k in range(30)]
    assert all(len(c) == 1 for c in carriers)  # each note in exactly one message
    assert [c[0] for c in carriers] == sorted(c[0] for c in carriers)  # in order
    latencies = [hs.matrix.accepted_at[c[0]] - (T0 + k) for k, c in enumerate(carriers)]
    # within Synapse's whole-ms rounding: a retry that lands a hair early is refused and tried 20 ms later
    assert latencies == pytest.approx(list(bound.latencies), abs=0.025)
    assert len(hs.matrix.events) == bound.messages
    txn_ids = [e.txn_id for e in hs.matrix.events]
    assert len(set(txn_ids)) == len(txn_ids)
    assert hs.store.cursors == {ACCOUNT: "0029"}
    assert hs.store.outbox == []


async def test_a_message_that_may_have_reached_the_room_is_sent_again_as_it_was_not_refolded() -> None:
    hs = Homeserver(burst=1)
    worker = asyncio.create_task(hs.delivery.run())
    try:
        hs.matrix.fail = True  # the first attempt fails after the homeserver took it: it may be stored
        hs.delivery.submit([mention("0001", "note-01")])
        await wait_until(lambda: hs.time.next_wake is not None, what="the retry backoff")
        hs.matrix.fail = False
        hs.delivery.submit([mention("0002", "note-02")])
        backoff = hs.time.next_wake
        assert backoff is not None
        assert backoff < T0 + 1 / RATE  # the retry comes while the bucket is still full
        hs.time.advance(backoff)
        await wait_until(hs.idle, what="the retry refused and waiting for the limiter")
        await hs.wait_out_the_limiter()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    first, second = hs.matrix.events
    assert "note-01" in first.body
    assert "note-02" not in first.body
    assert first.txn_id == txn_id_for([(ACCOUNT, "0001")])  # the same transaction: no duplicate
    assert "note-02" in second.body
    assert hs.matrix.sender.tracker.hits >= 1  # a 429 came between, and still nothing was re-composed
    assert hs.store.cursors == {ACCOUNT: "0002"}
