"""The one way tests wait for something to happen: poll a condition until it holds.

The timeout only bounds a failure (it says what never happened); it is not a guess at how long the
thing takes, so it is generous: a slow, busy machine must never trip it. A test that proves something
does NOT happen does not use this to sleep: it waits for a later, positive event instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEFAULT_TIMEOUT", "WaitTimeout", "wait_for_value", "wait_until", "wait_until_sync"]

DEFAULT_TIMEOUT = 60.0

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold within the timeout (a test failure, not an error in the test)."""


async def wait_for_value(
    probe: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    *,
    what: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
) -> T:
    """Call `probe` (plain or async) until it returns something other than None, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value is not None:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or _describe(probe)}")
        await asyncio.sleep(interval)


async def wait_until(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    what: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
) -> None:
    """Call `predicate` (plain or async) until it is true; fail naming `what` (or quoting the predicate)
    after `timeout` seconds."""

    async def probe() -> bool | None:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        return True if result else None

    await wait_for_value(probe, what=what or _describe(predicate), timeout=timeout, interval=interval)


def wait_until_sync(
    predicate: Callable[[], bool],
    *,
    what: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
) -> None:
    """`wait_until` for code outside an event loop (a thread, a subprocess watcher)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or _describe(predicate)}")
        time.sleep(interval)


def _describe(condition: Callable[..., object]) -> str:
    """Without a `what`, the failure message quotes the condition's source line."""
    try:
        return inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return getattr(condition, "__qualname__", repr(condition))
