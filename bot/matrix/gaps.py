"""Fetching what a limited sync timeline left out, so commands sent while the bot was down are not lost.

A sync returns at most the filter's timeline limit of events per room. When more arrived since the previous
sync, the room's timeline is `limited` and `prev_batch` points just before its first event; the events in
between ("the gap") are fetched with /rooms/{roomId}/messages?dir=b&from=<prev_batch>&to=<since>, paged
backwards and bounded. nio's `room_messages` decrypts Megolm events it has keys for (receive_response).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nio

from bot.matrix.errors import MatrixError
from bot.matrix.nio_client import call
from bot.matrix.sender import RateLimitTracker, retry_rate_limited
from bot.matrix.types import RoomId

log = logging.getLogger(__name__)

MAX_GAP_EVENTS = 1000  # per room per sync
PAGE_SIZE = 100

# Per joined room: the gap's nio events, oldest first.
Gaps = Mapping[RoomId, Sequence[Any]]


@dataclass(frozen=True)
class Page:
    events: Sequence[Any]  # newest first, as dir=b returns them
    end: str | None  # token for the next (older) page; None when the server has no more


# (from token, limit) → one page of /messages going backwards.
FetchPage = Callable[[str, int], Awaitable[Page]]


@dataclass(frozen=True)
class Gap:
    events: tuple[Any, ...]  # oldest first
    truncated: bool  # the bound was hit while the server still had older events to give


async def collect_gap(
    fetch: FetchPage, start: str, stop: str, *, max_events: int = MAX_GAP_EVENTS, page_size: int = PAGE_SIZE
) -> Gap:
    """Page backwards from `start` until an empty page, the `stop` token, or `max_events` events.

    Bounded by the newest events: when the bound is hit, the oldest part of the gap is what is left out.
    """
    newest_first: list[Any] = []
    token = start
    while True:
        room = max_events - len(newest_first)
        page = await fetch(token, min(page_size, room))
        if not page.events:
            return Gap(tuple(reversed(newest_first)), truncated=False)
        newest_first.extend(page.events[:room])
        last = page.end is None or page.end in (stop, token)
        if len(newest_first) >= max_events:
            return Gap(tuple(reversed(newest_first)), truncated=not last or len(page.events) > room)
        if page.end is None or last:
            return Gap(tuple(reversed(newest_first)), truncated=False)
        token = page.end


def _event_id(event: Any) -> str | None:
    event_id = getattr(event, "event_id", None)
    return event_id if isinstance(event_id, str) else None


def without_duplicates(gap: Sequence[Any], timeline: Sequence[Any]) -> list[Any]:
    """The gap's events minus any the timeline (or the gap itself, earlier) already holds."""
    seen = {i for i in map(_event_id, timeline) if i is not None}
    out: list[Any] = []
    for event in gap:
        event_id = _event_id(event)
        if event_id is not None:
            if event_id in seen:
                continue
            seen.add(event_id)
        out.append(event)
    return out


async def fetch_gaps(client: Any, response: Any, since: str) -> dict[RoomId, list[Any]]:
    """The gap of every joined room whose timeline in this sync (made from `since`) was limited.

    A room whose gap cannot be fetched is logged and skipped: its timeline is still delivered.
    """
    gaps: dict[RoomId, list[Any]] = {}
    tracker = RateLimitTracker()  # private: a 429 here must not look like blocked sends to observers
    for room_id, info in response.rooms.join.items():
        timeline = info.timeline
        prev_batch = timeline.prev_batch
        if not timeline.limited or not isinstance(prev_batch, str) or not prev_batch:
            continue
        rid = RoomId(room_id)

        async def fetch(token: str, limit: int, rid: RoomId = rid) -> Page:
            resp = await retry_rate_limited(
                lambda: call(
                    "room messages",
                    client.room_messages(
                        rid, start=token, end=since, direction=nio.MessageDirection.back, limit=limit
                    ),
                ),
                tracker,
            )
            end = resp.end
            return Page(list(resp.chunk), end if isinstance(end, str) else None)

        try:
            gap = await collect_gap(fetch, prev_batch, since)
        except MatrixError as e:
            log.warning("could not fetch the events missing from the sync of %s: %s", rid, e)
            continue
        if gap.truncated:
            log.warning(
                "more than %d events arrived in %s while the bot was away: only the newest %d are handled",
                MAX_GAP_EVENTS,
                rid,
                MAX_GAP_EVENTS,
            )
        gaps[rid] = without_duplicates(gap.events, timeline.events)
    return gaps
