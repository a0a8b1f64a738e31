"""A background loop that does one step now, then again every `interval` seconds or as soon as woken.

A wake-up that arrives during a step is kept: the next step follows at once. A failing step is logged and
tried again at the next turn; only cancellation ends the loop. The sleep is injected, so tests that must not
wait for the interval pass one that never returns and drive the loop by waking it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["WakeLoop"]

log = logging.getLogger(__name__)


class WakeLoop:
    def __init__(
        self,
        step: Callable[[], Awaitable[object]],
        interval: float,
        *,
        failure: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._step = step
        self._interval = interval
        self._failure = failure  # logged with the traceback when a step raises
        self._sleep = sleep
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s", self._failure)
            await self._nap()

    async def _nap(self) -> None:
        nap = asyncio.ensure_future(self._sleep(self._interval))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({nap, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            woken.cancel()
