"""Memory kept per notification and per buffer is bounded in bytes (issue 10, item 3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import BadResponseError, FediverseError
from bot.fediverse.bounded import JsonLimits, bounded_copy
from bot.fediverse.models import Notification, ShapeError, parse_notification
from bot.fediverse.stream_frames import MAX_FRAME_CONTAINERS, parse_stream_frame
from bot.relay.account_relay import AccountRelay
from bot.relay.buffer import BoundedBuffer

LIMITS = JsonLimits()
ACCOUNT = {"id": "01A", "username": "bob", "acct": "bob@remote.example", "url": None, "display_name": "Bob"}


def notification(**extra: Any) -> dict[str, Any]:
    return {
        "id": "01N",
        "type": "mention",
        "created_at": "2026-11-28T03:08:32.000Z",
        "account": ACCOUNT,
        **extra,
    }


def frame(payload: object) -> str:
    return json.dumps(
        {"stream": ["user:notification"], "event": "notification", "payload": json.dumps(payload)}
    )


@pytest.mark.parametrize(
    "hostile",
    [
        [[] for _ in range(400_000)],  # the 1.4 MB `[[],[],…]`
        {f"k{i}": i for i in range(200_000)},
        "x" * 5_000_000,
        ["y" * 40_000 for _ in range(100)],
        10**400,
    ],
    ids=["lists", "keys", "string", "strings", "giant-int"],
)
def test_a_kept_notification_is_bounded_in_bytes_whatever_it_carries(hostile: object) -> None:
    n = parse_notification(notification(status={"id": "01S", "content": "<p>hi</p>", "x": hostile}))
    assert n.retained_bytes <= LIMITS.max_bytes + 4096
    assert n.raw["id"] == "01N"
    assert n.raw["type"] == "mention"
    assert n.status is not None


def test_deep_nesting_is_cut() -> None:
    deep: object = "bottom"
    for _ in range(500):
        deep = [deep]
    copied = bounded_copy({"a": deep}).value
    depth = 0
    node = copied["a"]
    while isinstance(node, list) and node:
        node, depth = node[0], depth + 1
    assert depth < LIMITS.max_depth


def test_an_ordinary_notification_is_kept_whole() -> None:
    n = notification(
        status={"id": "01S", "content": "<p>" + "word " * 1000 + "</p>", "media_attachments": [{}]}
    )
    assert parse_notification(n).raw == n


@pytest.mark.parametrize("bad_id", ["\ud800", "01N\n", "a b", "x" * 129, "01N/../x", "١٢٣"])
def test_ids_that_could_poison_a_cursor_or_transaction_id_are_refused(bad_id: str) -> None:
    with pytest.raises(ShapeError):
        parse_notification(notification(id=bad_id))


def test_a_frame_of_empty_arrays_is_refused_before_it_is_parsed() -> None:
    hostile = frame(notification(x=[[] for _ in range(MAX_FRAME_CONTAINERS)]))
    with pytest.raises(ShapeError, match="too many"):
        parse_stream_frame(hostile)
    with pytest.raises(ShapeError, match="too many"):
        parse_stream_frame(hostile.encode())
    assert parse_stream_frame(frame(notification(x=[[] for _ in range(100)]))) is not None


async def _yield_to_loop() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_buffer_waits_when_its_bytes_are_used_up() -> None:
    buffer: BoundedBuffer[str] = BoundedBuffer(max_items=100, max_bytes=1000)
    await buffer.put("a", 600)
    blocked = asyncio.create_task(buffer.put("b", 600))
    await _yield_to_loop()
    assert not blocked.done()
    assert (len(buffer), buffer.bytes) == (1, 600)
    assert await buffer.get() == "a"
    await asyncio.wait_for(blocked, 5)
    assert (len(buffer), buffer.bytes) == (1, 600)


async def test_an_item_larger_than_the_budget_still_passes_alone() -> None:
    buffer: BoundedBuffer[str] = BoundedBuffer(max_items=100, max_bytes=10)
    await asyncio.wait_for(buffer.put("big", 50), 5)
    assert await buffer.get() == "big"
    assert buffer.bytes == 0


class _BrokenStream:
    """A stream whose iteration fails with an error nobody foresaw (cannot be produced for real)."""

    def __repr__(self) -> str:
        return "BrokenStream"

    def __aiter__(self) -> AsyncIterator[Notification]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Notification]:
        yield parse_notification(notification())
        raise RuntimeError("a bug in a library")


async def test_a_pump_failure_reaches_the_relay_loop_as_a_stream_error() -> None:
    buffer: BoundedBuffer[Notification | FediverseError] = BoundedBuffer(max_items=10, max_bytes=10**6)
    await asyncio.wait_for(AccountRelay._pump(_BrokenStream(), buffer), 5)  # type: ignore[arg-type]
    first, second = await buffer.get(), await buffer.get()
    assert isinstance(first, Notification)
    assert isinstance(second, BadResponseError)
