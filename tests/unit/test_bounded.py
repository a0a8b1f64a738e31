"""Memory kept per notification and per buffer is bounded in bytes (issue 10, item 3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.errors import BadResponseError, FediverseError
from bot.fediverse.bounded import JsonLimits, bounded_copy
from bot.fediverse.models import (
    FediverseAccount,
    Notification,
    NotificationId,
    Poll,
    PollOption,
    RemoteAccountId,
    ShapeError,
    Status,
    StatusId,
    parse_notification,
)
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
    assert (n.id, n.type) == ("01N", "mention")
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


def _mastodon_mention() -> dict[str, Any]:
    """A reply mentioning alice as Mastodon 4 sends it, with everything a notification carries."""

    def account(acct: str, name: str) -> dict[str, Any]:
        user, _, domain = acct.partition("@")
        base = f"https://{domain or 'example.org'}"
        return {
            "id": f"1090{len(acct)}",
            "username": user,
            "acct": acct,
            "display_name": name,
            "locked": False,
            "bot": False,
            "discoverable": True,
            "group": False,
            "created_at": "2023-01-02T00:00:00.000Z",
            "note": "<p>Writes about birds.</p>",
            "url": f"{base}/@{user}",
            "uri": f"{base}/users/{user}",
            "avatar": f"{base}/system/accounts/avatars/{user}.png",
            "avatar_static": f"{base}/a/{user}.png",
            "header": f"{base}/system/accounts/headers/{user}.png",
            "header_static": f"{base}/h/{user}.png",
            "followers_count": 112,
            "following_count": 87,
            "statuses_count": 1504,
            "last_status_at": "2026-11-27",
            "emojis": [],
            "fields": [{"name": "Web", "value": base}],
        }

    bob = account("bob@remote.example", "Bob")
    return {
        "id": "113545",
        "type": "mention",
        "created_at": "2026-11-28T03:08:32.000Z",
        "account": bob,
        "status": {
            "id": "113544",
            "created_at": "2026-11-28T03:08:31.000Z",
            "in_reply_to_id": "113500",
            "in_reply_to_account_id": "1090",
            "sensitive": True,
            "spoiler_text": "birds",
            "visibility": "unlisted",
            "language": "en",
            "uri": "https://remote.example/users/bob/statuses/113544",
            "url": "https://remote.example/@bob/113544",
            "replies_count": 0,
            "reblogs_count": 2,
            "favourites_count": 5,
            "edited_at": None,
            "content": '<p><span class="h-card"><a href="https://example.org/@alice" class="u-url mention">'
            '@<span>alice</span></a></span> <span class="h-card"><a href="https://third.example/@carol" '
            'class="u-url mention">@<span>carol</span></a></span> a heron, at last!</p>',
            "reblog": None,
            "application": {"name": "Web", "website": None},
            "account": bob,
            "media_attachments": [
                {
                    "id": "7",
                    "type": "image",
                    "url": "https://remote.example/m/7.jpg",
                    "preview_url": None,
                    "remote_url": None,
                    "description": "A grey heron",
                    "blurhash": "UFG[.xj[~qof",
                    "meta": {},
                }
            ],
            "mentions": [
                {"id": "1", "username": "alice", "url": "https://example.org/@alice", "acct": "alice"},
                {
                    "id": "2",
                    "username": "carol",
                    "url": "https://third.example/@carol",
                    "acct": "carol@third.example",
                },
            ],
            "tags": [],
            "emojis": [],
            "card": None,
            "poll": {
                "id": "9",
                "expires_at": None,
                "expired": False,
                "multiple": False,
                "votes_count": 3,
                "voters_count": 3,
                "options": [{"title": "yes", "votes_count": 2}, {"title": "no", "votes_count": None}],
                "emojis": [],
            },
        },
    }


def test_what_formatting_the_event_map_and_replies_read_is_kept() -> None:
    """Only the typed fields are kept; every one of them has what the server sent."""
    bob = FediverseAccount(
        id=RemoteAccountId("109018"),
        username="bob",
        acct="bob@remote.example",
        url="https://remote.example/@bob",
        display_name="Bob",
    )
    data = _mastodon_mention()
    expected = Notification(
        id=NotificationId("113545"),
        type="mention",
        created_at=datetime(2026, 11, 28, 3, 8, 32, tzinfo=UTC),
        account=bob,
        status=Status(
            id=StatusId("113544"),
            uri="https://remote.example/users/bob/statuses/113544",
            url="https://remote.example/@bob/113544",
            content=data["status"]["content"],
            spoiler_text="birds",
            visibility="unlisted",
            sensitive=True,
            created_at=datetime(2026, 11, 28, 3, 8, 31, tzinfo=UTC),
            account=bob,
            in_reply_to_id="113500",
            media_count=1,
            poll=Poll((PollOption("yes", 2), PollOption("no", None))),
            mentions=("alice", "carol@third.example"),
        ),
    )
    assert parse_notification(data) == expected


def test_a_long_post_is_kept_whole() -> None:
    content = "<p>" + "word " * 1000 + "</p>"
    n = parse_notification(notification(status={"id": "01S", "content": content}))
    assert n.status is not None
    assert n.status.content == content
    assert n.retained_bytes >= len(content)


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
