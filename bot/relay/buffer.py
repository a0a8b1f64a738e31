"""A FIFO bounded both by item count and by bytes: `put` waits for room, `get` waits for an item.

An item larger than the whole byte budget still gets in once the buffer is empty, so nothing can wait
forever; the bound is then that one item (itself bounded where it was made: `fediverse.bounded`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["BoundedBuffer"]

T = TypeVar("T")


class BoundedBuffer(Generic[T]):
    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._room = asyncio.Event()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _fits(self, size: int) -> bool:
        if not self._items:
            return True
        return len(self._items) < self.max_items and self._bytes + size <= self.max_bytes

    async def put(self, item: T, size: int = 0) -> None:
        while not self._fits(size):
            self._room.clear()
            await self._room.wait()
        self._items.append((item, size))
        self._bytes += size
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self._bytes -= size
        self._room.set()
        return item
