"""A circuit breaker per fediverse instance, shared by every account on it.

closed → (threshold consecutive failures) → open for a cooldown → half-open: one caller probes, the others
wait for its result → closed on success, open again (with a longer cooldown, up to a cap) on failure.
While open nobody touches the instance, so a down instance with a thousand accounts sees one probe per
cooldown instead of a thousand reconnects. Breakers of other instances are unaffected.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

__all__ = ["BreakerRegistry", "BreakerState", "CircuitBreaker"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        max_cooldown: float = 300.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._cooldown = cooldown
        self._open_until = 0.0
        self._probe_started: float | None = None
        self._changed = asyncio.Event()

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            log.info("circuit breaker for %s: %s → %s", self.name, self.state.value, state.value)
            self.state = state
            if self._on_change is not None:
                self._on_change()
        self._changed.set()
        self._changed = asyncio.Event()

    def try_acquire(self) -> float:
        """0 when the caller may contact the instance now (in half-open: as the single probe); otherwise
        the longest it should wait before asking again (it is woken earlier when the state changes)."""
        now = self._clock()
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            if now < self._open_until:
                return self._open_until - now
            self._set(BreakerState.HALF_OPEN)
            self._probe_started = None
        # half-open: one probe at a time; a probe that never reported (cancelled) expires after a cooldown
        if self._probe_started is None or now - self._probe_started > self._cooldown:
            self._probe_started = now
            return 0.0
        return self._cooldown

    async def acquire(self) -> None:
        """Wait until the caller may contact the instance."""
        while True:
            delay = self.try_acquire()
            if delay <= 0:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(delay):
                    await changed.wait()
            except TimeoutError:
                pass

    def record_success(self) -> None:
        self.failures = 0
        self._cooldown = self.base_cooldown
        self._probe_started = None
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self.max_cooldown, self._cooldown * 2)
            self._trip()
        elif self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._trip()

    def _trip(self) -> None:
        self._open_until = self._clock() + self._cooldown
        self._probe_started = None
        log.warning("%s keeps failing: pausing requests to it for %.0f s", self.name, self._cooldown)
        self._set(BreakerState.OPEN)


class BreakerRegistry:
    """One breaker per instance key, created on first use."""

    def __init__(
        self,
        *,
        threshold: int,
        cooldown: float,
        max_cooldown: float,
        clock: Clock = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._settings = (threshold, cooldown, max_cooldown)
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            threshold, cooldown, max_cooldown = self._settings
            breaker = CircuitBreaker(
                name,
                threshold=threshold,
                cooldown=cooldown,
                max_cooldown=max_cooldown,
                clock=self._clock,
                on_change=self._changed,
            )
            self._breakers[key] = breaker
        return breaker

    @property
    def open_count(self) -> int:
        return sum(1 for b in self._breakers.values() if b.state is not BreakerState.CLOSED)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.open_count)
