"""Steps that must run to their end once started, even when whoever waits for them is cancelled.

A command runs under a deadline (`asyncio.timeout`): when it fires, the command's task is cancelled at
whatever `await` it is in. For most steps that is fine, but not between "the instance gave us a token"
and "the token is stored, or revoked": a cancel there would leave a live token nobody knows about. Such
a step is run here: in its own task, awaited through `asyncio.shield`, so the deadline stops the waiting,
not the step. `wait()` lets the owner (and tests) wait for steps still finishing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["MustFinish"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class MustFinish:
    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, step: Coroutine[Any, Any, T]) -> T:
        """Run `step` to its end; a cancel of the caller does not reach it."""
        task = asyncio.create_task(step, name=self._name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Whoever waited may be gone (cancelled): the failure is still worth a line in the log.
            log.info("%s ended with %s", self._name, type(task.exception()).__name__)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every step started so far has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
