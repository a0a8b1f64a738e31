"""Pure parts of bot.matrix: DM and power-level rules, event conversion, errors, send ordering, gaps."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import nio
import pytest

from bot.matrix import dm_rules
from bot.matrix.adapter import notice_content
from bot.matrix.errors import (
    MatrixForbidden,
    MatrixNotFound,
    MatrixRateLimited,
    MatrixRequestError,
    MatrixTooLarge,
    MatrixUnknownToken,
    error_from_response,
)
from bot.matrix.events import events_from_sync, invite_from_state, left_member, message_from_source
from bot.matrix.gaps import Gap, Page, collect_gap, without_duplicates
from bot.matrix.sender import FairSender, RateLimitTracker, retry_delay, unhinted_delay
from bot.matrix.types import IncomingMessage, MemberLeft, RateLimitState, RoomChanged, RoomId, UserId

BOT, ALICE, CAROL = "@bot:example.org", "@alice:example.org", "@carol:example.org"
ROOM = RoomId("!room:example.org")


def member(user: str, membership: str) -> dict[str, Any]:
    return {"type": "m.room.member", "state_key": user, "sender": user, "content": {"membership": membership}}


def test_dm_create_args() -> None:
    history = {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": "invited"},
    }
    encrypted = dm_rules.dm_create_args(ALICE, encrypted=True)
    assert encrypted["is_direct"] is True
    assert encrypted["invite"] == [ALICE]
    assert encrypted["initial_state"] == [
        history,
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
    ]
    assert dm_rules.dm_create_args(ALICE, encrypted=False)["initial_state"] == [history]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ([member(BOT, "join"), member(ALICE, "join")], True),
        ([member(BOT, "join"), member(ALICE, "invite")], True),
        ([member(BOT, "join"), member(ALICE, "join"), member(CAROL, "invite")], False),
        ([member(BOT, "join"), member(ALICE, "join"), member(CAROL, "leave")], True),
        ([member(BOT, "join"), member(ALICE, "ban")], False),
        ([member(BOT, "join")], False),
        ([member(BOT, "join"), member(CAROL, "join")], False),
    ],
)
def test_is_one_to_one(state: list[dict[str, Any]], expected: bool) -> None:
    assert dm_rules.is_one_to_one(dm_rules.current_members(state), BOT, ALICE) is expected


def room_state(
    creator: str, *, join_rule: str = "invite", history: str = "shared", version: str = "12"
) -> list[dict[str, Any]]:
    return [
        {"type": "m.room.create", "state_key": "", "sender": creator, "content": {"room_version": version}},
        {
            "type": "m.room.join_rules",
            "state_key": "",
            "sender": creator,
            "content": {"join_rule": join_rule},
        },
        {
            "type": "m.room.history_visibility",
            "state_key": "",
            "sender": creator,
            "content": {"history_visibility": history},
        },
        member(BOT, "join"),
        member(ALICE, "join"),
    ]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (room_state(ALICE), True),
        (room_state(BOT), True),
        (room_state(ALICE, version="10"), True),
        # a third person made the room, invited both and left: they could rejoin or read it
        ([*room_state(CAROL), member(CAROL, "leave")], False),
        (room_state(ALICE, join_rule="public"), False),
        (room_state(ALICE, join_rule="knock"), False),
        (room_state(ALICE, history="world_readable"), False),
        ([*room_state(ALICE), member(CAROL, "invite")], False),
        ([s for s in room_state(ALICE) if s["type"] != "m.room.create"], False),
    ],
)
def test_is_private_dm(state: list[dict[str, Any]], expected: bool) -> None:
    assert dm_rules.is_private_dm(state, BOT, ALICE) is expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [("12", {BOT, CAROL}), ("10", set()), ("org.example.custom", set())],
)
def test_room_creators(version: str, expected: set[str]) -> None:
    create = {
        "type": "m.room.create",
        "state_key": "",
        "sender": BOT,
        "content": {"room_version": version, "additional_creators": [CAROL]},
    }
    assert dm_rules.room_creators([member(BOT, "join"), create]) == expected


def message(content: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "event_id": "$e",
        "sender": ALICE,
        "origin_server_ts": 1700,
        "content": content,
    }


def test_message_from_source_keeps_html_only_when_declared() -> None:
    html = message(
        {"msgtype": "m.text", "body": "hi", "format": "org.matrix.custom.html", "formatted_body": "<b>hi</b>"}
    )
    got = message_from_source(ROOM, html, encrypted=True)
    assert got is not None
    assert (got.body, got.formatted_body, got.is_encrypted, got.server_ts) == ("hi", "<b>hi</b>", True, 1700)
    undeclared = message_from_source(
        ROOM, message({"msgtype": "m.text", "body": "x", "formatted_body": "<i>"}), encrypted=False
    )
    assert undeclared is not None
    assert undeclared.formatted_body is None


@pytest.mark.parametrize(
    "source",
    [
        message({}),  # redacted
        message({"msgtype": "m.text", "body": 3}),
        message({"msgtype": "m.text", "body": "* fixed", "m.relates_to": {"rel_type": "m.replace"}}),
        {**message({"msgtype": "m.text", "body": "x"}), "type": "m.reaction"},
        {**message({"msgtype": "m.text", "body": "x"}), "sender": None},
    ],
)
def test_message_from_source_skips(source: dict[str, Any]) -> None:
    assert message_from_source(ROOM, source, encrypted=False) is None


def test_invite_from_state_reads_is_direct_and_inviter() -> None:
    invite = {"type": "m.room.member", "state_key": BOT, "sender": ALICE, "content": {"membership": "invite"}}
    direct = {**invite, "content": {"membership": "invite", "is_direct": True}}
    assert invite_from_state(ROOM, [member(ALICE, "join"), direct], UserId(BOT)).is_direct is True
    plain = invite_from_state(ROOM, [invite], UserId(BOT))
    assert (plain.is_direct, plain.inviter) == (False, ALICE)


def test_left_member() -> None:
    assert left_member(ROOM, member(ALICE, "leave")) == MemberLeft(ROOM, UserId(ALICE))
    assert left_member(ROOM, member(ALICE, "ban")) == MemberLeft(ROOM, UserId(ALICE))
    assert left_member(ROOM, member(ALICE, "join")) is None


@pytest.mark.parametrize(
    ("errcode", "status", "cls"),
    [
        ("M_LIMIT_EXCEEDED", 429, MatrixRateLimited),
        (None, 429, MatrixRateLimited),
        ("M_UNKNOWN_TOKEN", 401, MatrixUnknownToken),
        ("M_FORBIDDEN", 403, MatrixForbidden),
        ("M_NOT_FOUND", 404, MatrixNotFound),
        ("M_TOO_LARGE", 413, MatrixTooLarge),
        (None, 403, MatrixForbidden),
        (None, 413, MatrixTooLarge),
        ("M_UNKNOWN", 500, MatrixRequestError),
        (None, 502, MatrixRequestError),
    ],
)
def test_error_from_response(errcode: str | None, status: int, cls: type[MatrixRequestError]) -> None:
    error = error_from_response("nope", errcode, status, 1200)
    assert type(error) is cls
    assert error.status == status
    if isinstance(error, MatrixRateLimited):
        assert error.retry_after_ms == 1200


def test_retry_delay_is_the_servers_hint_exactly_and_backoff_only_without_one() -> None:
    assert retry_delay(4321) == pytest.approx(4.322)  # Synapse truncates its hint to whole ms
    assert retry_delay(0) == pytest.approx(0.02)  # "within a millisecond": no tight request loop
    assert retry_delay(10**9) == pytest.approx(300.0)
    assert retry_delay(None) == 5.0
    assert [unhinted_delay(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


async def test_fair_sender_keeps_a_rooms_order_across_a_429() -> None:
    tracker = RateLimitTracker()
    states: list[RateLimitState] = []
    tracker.subscribe(states.append)
    sender = FairSender(tracker)
    done: list[int] = []
    refused = {2}

    async def send(i: int) -> int:
        await asyncio.sleep(0)
        if i in refused:
            refused.discard(i)
            raise MatrixRateLimited("slow down", retry_after_ms=1)
        done.append(i)
        return i

    results = await asyncio.gather(*(sender.run("!room", lambda i=i: send(i)) for i in range(6)))
    assert results == list(range(6))
    assert done == list(range(6))
    assert tracker.hits == 1
    assert [s.blocked for s in states] == [True, False]
    assert states[0].queued == 3  # 3, 4 and 5 were waiting behind the refused send


async def test_fair_sender_serves_rooms_in_turn_so_a_backlog_does_not_sit_ahead_of_a_reply() -> None:
    sender = FairSender(RateLimitTracker())
    done: list[str] = []
    homeserver = asyncio.Event()  # each send waits for the homeserver, as under its rate limit

    async def send(what: str) -> str:
        await homeserver.wait()
        homeserver.clear()
        done.append(what)
        return what

    flood = [asyncio.create_task(sender.run("!flooder", lambda i=i: send(f"flood {i}"))) for i in range(200)]
    await asyncio.sleep(0)  # the flooder's 200 sends are queued (one in flight)
    assert sender.queued == 199
    reply = asyncio.create_task(sender.run("!bob", lambda: send("bob's help")))
    later = asyncio.create_task(sender.run("!carol", lambda: send("carol's help")))
    while not (reply.done() and later.done()):
        homeserver.set()
        await asyncio.sleep(0)
    assert done.index("bob's help") <= 2
    assert done.index("carol's help") <= 4
    while not all(t.done() for t in flood):
        homeserver.set()
        await asyncio.sleep(0)
    assert [d for d in done if d.startswith("flood")] == [f"flood {i}" for i in range(200)]
    assert sender.queued == 0


async def test_a_cancelled_send_gives_up_its_place_and_its_turn() -> None:
    sender = FairSender(RateLimitTracker())
    gate = asyncio.Event()
    done: list[str] = []

    async def send(what: str) -> None:
        await gate.wait()
        done.append(what)

    first = asyncio.create_task(sender.run("!a", lambda: send("first")))
    waiting = asyncio.create_task(sender.run("!b", lambda: send("cancelled")))
    last = asyncio.create_task(sender.run("!c", lambda: send("last")))
    await asyncio.sleep(0)
    waiting.cancel()
    gate.set()
    await asyncio.gather(first, last)
    assert waiting.cancelled()
    assert done == ["first", "last"]
    assert sender.queued == 0


class FakeHistory:
    """/messages?dir=b over a list of event ids (oldest first); tokens are positions, "0" is the stop."""

    def __init__(self, count: int, *, extra_empty_page: bool = True) -> None:
        self.ids = [f"$e{i}" for i in range(count)]
        self.calls: list[tuple[str, int]] = []
        self.extra_empty_page = extra_empty_page

    async def __call__(self, token: str, limit: int) -> Page:
        self.calls.append((token, limit))
        pos = int(token)
        chunk = list(reversed(self.ids[max(0, pos - limit) : pos]))
        if not chunk:
            return Page([], None)
        end = max(0, pos - limit)
        return Page(chunk, str(end) if end or self.extra_empty_page else None)


async def test_collect_gap_pages_backwards_until_the_stop_token_oldest_first() -> None:
    history = FakeHistory(250)
    gap = await collect_gap(history, "250", "0", page_size=100)
    assert list(gap.events) == history.ids
    assert not gap.truncated
    assert history.calls == [("250", 100), ("150", 100), ("50", 100)]  # "0" is the stop token: no 4th call


async def test_collect_gap_ends_on_an_empty_page_or_a_missing_end() -> None:
    history = FakeHistory(30)
    gap = await collect_gap(history, "30", "elsewhere", page_size=10)
    assert list(gap.events) == history.ids
    assert not gap.truncated
    assert history.calls[-1] == ("0", 10)  # the server's empty page ends it

    no_end = FakeHistory(30, extra_empty_page=False)
    gap = await collect_gap(no_end, "30", "elsewhere", page_size=100)
    assert list(gap.events) == no_end.ids
    assert no_end.calls == [("30", 100)]

    empty = FakeHistory(0)
    gap = await collect_gap(empty, "0", "stop")
    assert gap == Gap((), truncated=False)


async def test_collect_gap_is_bounded_to_the_newest_events() -> None:
    history = FakeHistory(2500)
    gap = await collect_gap(history, "2500", "0", max_events=1000, page_size=100)
    assert list(gap.events) == history.ids[1500:]  # the newest 1000, oldest first
    assert gap.truncated
    assert len(history.calls) == 10
    assert all(limit == 100 for _, limit in history.calls)

    odd = FakeHistory(300)
    gap = await collect_gap(odd, "300", "0", max_events=250, page_size=100)
    assert list(gap.events) == odd.ids[50:]
    assert gap.truncated
    assert odd.calls[-1] == ("100", 50)  # the last page asks only for what still fits

    exact = FakeHistory(200)
    gap = await collect_gap(exact, "200", "0", max_events=200, page_size=100)
    assert list(gap.events) == exact.ids
    assert not gap.truncated


def test_gap_without_duplicates_of_the_timeline() -> None:
    def ev(event_id: str) -> SimpleNamespace:
        return SimpleNamespace(event_id=event_id)

    gap = [ev("$a"), ev("$b"), ev("$a"), ev("$c")]
    timeline = [ev("$c"), ev("$d")]
    assert [e.event_id for e in without_duplicates(gap, timeline)] == ["$a", "$b"]


def test_gap_events_go_through_the_timeline_conversion_before_the_timeline() -> None:
    def message(event_id: str, sender: str, body: str, **content: Any) -> nio.Event:
        source = {
            "type": "m.room.message",
            "event_id": event_id,
            "sender": sender,
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": body, **content},
        }
        return nio.Event.parse_event(source)

    edit = {"m.relates_to": {"rel_type": "m.replace", "event_id": "$g1"}}
    gap = [
        message("$g1", ALICE, "!gts one"),
        message("$g2", BOT, "mine"),
        message("$g3", ALICE, "* x", **edit),
    ]
    timeline = SimpleNamespace(limited=True, prev_batch="p", events=[message("$t1", ALICE, "!gts two")])
    rooms = SimpleNamespace(invite={}, join={ROOM: SimpleNamespace(timeline=timeline, state=[])}, leave={})
    events = events_from_sync(SimpleNamespace(rooms=rooms), UserId(BOT), lambda e: "x", gaps={ROOM: gap})
    assert [(e.event_id, e.body) for e in events if isinstance(e, IncomingMessage)] == [
        ("$g1", "!gts one"),
        ("$t1", "!gts two"),
    ]
    assert len(events) == 2


def _state_event(kind: str, sender: str, state_key: str, content: dict[str, Any]) -> nio.Event:
    source = {
        "type": kind,
        "event_id": f"${kind}{state_key}{len(str(content))}",
        "sender": sender,
        "state_key": state_key,
        "origin_server_ts": 1,
        "content": content,
    }
    parsed = nio.Event.parse_event(source)
    return parsed if not isinstance(parsed, nio.UnknownEvent) else nio.UnknownEvent.from_dict(source)


def test_changes_that_can_make_a_dm_less_private_become_room_changed_events() -> None:
    eve = "@eve:hs.test"
    timeline_events = [
        _state_event("m.room.member", ALICE, eve, {"membership": "invite"}),  # a third person invited
        _state_event("m.room.member", eve, eve, {"membership": "join"}),
        _state_event("m.room.join_rules", ALICE, "", {"join_rule": "public"}),
        _state_event("m.room.history_visibility", ALICE, "", {"history_visibility": "world_readable"}),
        _state_event("m.room.member", BOT, BOT, {"membership": "join"}),  # the bot itself: no change
        _state_event("m.room.topic", ALICE, "", {"topic": "hi"}),  # harmless
        _state_event("m.room.member", eve, eve, {"membership": "leave"}),  # a leave stays MemberLeft
    ]
    # A limited sync puts what changed before the timeline in the state section: counted once.
    state = [
        _state_event("m.room.member", eve, eve, {"membership": "join"}),
        _state_event("m.room.join_rules", ALICE, "", {"join_rule": "public"}),
    ]
    timeline = SimpleNamespace(limited=True, prev_batch="p", events=timeline_events)
    rooms = SimpleNamespace(invite={}, join={ROOM: SimpleNamespace(timeline=timeline, state=state)}, leave={})
    events = events_from_sync(SimpleNamespace(rooms=rooms), UserId(BOT), lambda e: "x", gaps={ROOM: []})
    assert events == [
        RoomChanged(RoomId(ROOM), UserId(eve)),
        RoomChanged(RoomId(ROOM), UserId(ALICE)),
        RoomChanged(RoomId(ROOM), UserId(eve)),
        RoomChanged(RoomId(ROOM), UserId(ALICE)),
        RoomChanged(RoomId(ROOM), UserId(ALICE)),
        MemberLeft(RoomId(ROOM), UserId(eve)),
    ]


def test_a_full_state_catch_up_is_no_change_of_privacy() -> None:
    state = [_state_event("m.room.member", ALICE, ALICE, {"membership": "join"})]
    timeline = SimpleNamespace(limited=False, prev_batch="p", events=[])
    rooms = SimpleNamespace(invite={}, join={ROOM: SimpleNamespace(timeline=timeline, state=state)}, leave={})
    response = SimpleNamespace(rooms=rooms)
    assert events_from_sync(response, UserId(BOT), lambda e: "x", full_state=True) == []
    assert events_from_sync(response, UserId(BOT), lambda e: "x") == [RoomChanged(ROOM, UserId(ALICE))]


def test_a_notice_never_pings_anyone() -> None:
    """Relayed text may say @room or a user's name: an empty m.mentions turns those pings off."""
    content = notice_content("hey @room", "hey <b>@room</b>")
    assert content["m.mentions"] == {}
    assert content["msgtype"] == "m.notice"
    assert (content["body"], content["formatted_body"]) == ("hey @room", "hey <b>@room</b>")
