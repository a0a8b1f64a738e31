"""FrameBudget: the token bucket over the frames one streaming connection receives (plain values)."""

from __future__ import annotations

from bot.fediverse.stream_frames import FrameBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_burst_is_spent_then_the_next_frame_overdraws() -> None:
    clock = Clock()
    budget = FrameBudget(rate=10.0, burst=5, clock=clock)
    assert [budget.spend() for _ in range(6)] == [True] * 5 + [False]


def test_the_bucket_refills_at_the_rate_and_never_past_the_burst() -> None:
    clock = Clock()
    budget = FrameBudget(rate=10.0, burst=5, clock=clock)
    assert all(budget.spend() for _ in range(5))
    clock.now += 0.35  # three and a half frames' worth
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    fresh = FrameBudget(rate=10.0, burst=5, clock=clock)
    clock.now += 3600  # an idle hour still allows only the burst
    assert [fresh.spend() for _ in range(6)] == [True] * 5 + [False]


def test_an_overdrawn_budget_stays_overdrawn() -> None:
    """The connection is closed at the first overdraft; a later refill must not make it look healthy."""
    clock = Clock()
    budget = FrameBudget(rate=10.0, burst=1, clock=clock)
    assert budget.spend()
    assert not budget.spend()
    clock.now += 10
    assert not budget.spend()


def test_a_steady_stream_below_the_rate_never_overdraws() -> None:
    clock = Clock()
    budget = FrameBudget(rate=10.0, burst=5, clock=clock)
    for _ in range(10_000):
        clock.now += 0.1
        assert budget.spend()
