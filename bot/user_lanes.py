"""Per-user serial work: each user's queued work runs in order on its own task, off the sync loop.

A lane is a bounded queue worked off by one task; at most `max_concurrent` lanes run at a time. Work
beyond `max_queued` waiting items is dropped (and counted), with one warning per backlog, so a flooding
user costs bounded memory and delays only themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["MAX_CONCURRENT_COMMANDS", "MAX_QUEUED_PER_USER", "UserLanes", "Work"]

log = logging.getLogger(__name__)

MAX_CONCURRENT_COMMANDS = 64
"""Lanes working at once. A command's work mostly waits on an instance (every call has a whole-request
deadline), so the cap bounds memory and open connections, not CPU: it is high enough that users with
slow (or deliberately slow) instances cannot hold every slot while others wait."""
MAX_QUEUED_PER_USER = 16

Work = Callable[[], Awaitable[None]]


@dataclass
class _Lane:
    """One user's queued work and the task working it off (None when idle)."""

    queue: deque[Work] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    dropping: bool = False


class UserLanes:
    def __init__(
        self, *, max_concurrent: int = MAX_CONCURRENT_COMMANDS, max_queued: int = MAX_QUEUED_PER_USER
    ) -> None:
        self._max_queued = max_queued
        self._lanes: dict[str, _Lane] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self.dropped = 0
        """Work items dropped because a user's lane was full."""

    def enqueue(self, user_id: str, work: Work) -> None:
        """Queue `work` behind the user's earlier work; returns at once (never awaits the work)."""
        lane = self._lanes.get(user_id)
        if lane is None:
            lane = self._lanes[user_id] = _Lane()
        if len(lane.queue) >= self._max_queued:
            self.dropped += 1
            if not lane.dropping:  # once per backlog, not once per dropped item
                lane.dropping = True
                log.warning(
                    "%s has %d items queued; dropping more until they are done", user_id, self._max_queued
                )
            return
        lane.queue.append(work)
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(user_id, lane), name=f"lane-{user_id}")

    async def _drain(self, user_id: str, lane: _Lane) -> None:
        """Work off a user's queue, one item at a time; a slow or hostile instance delays only them."""
        try:
            while lane.queue:
                work = lane.queue.popleft()
                async with self._slots:
                    try:
                        await work()
                    except Exception:
                        log.exception("work for %s failed outside its handler", user_id)
        finally:
            lane.task = None
            if self._lanes.get(user_id) is lane:
                del self._lanes[user_id]

    async def settled(self) -> None:
        """Until every lane is empty (tests, and a marker that queued work is done)."""
        while self._lanes:
            await asyncio.gather(*(lane.task for lane in list(self._lanes.values()) if lane.task))

    async def aclose(self, grace: float = 10.0) -> None:
        """Let queued work finish (up to `grace` seconds), then cancel the rest."""
        tasks = {lane.task for lane in self._lanes.values() if lane.task is not None}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
