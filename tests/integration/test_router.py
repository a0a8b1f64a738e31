"""The router's rules with a recording Matrix side and a real database: who is answered, where, how often."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.commands.registry import Command, CommandContext, CommandRegistry
from bot.commands.throttle import UserThrottle
from bot.config import MatrixConfig
from bot.dms import DmDirectory
from bot.matrix.types import EventId, IncomingMessage, MemberLeft, RoomId, UserId
from bot.router import Router, looks_like_pasted_code
from bot.store.models import HandledEvent
from bot.store.session_store import DatabaseHandledEvents
from tests.fakes.matrix import RecordingMatrix
from tests.waiting import wait_until

BOT, ALICE, EVE = "@bot:hs.test", "@alice:hs.test", "@eve:elsewhere.test"
DM, GROUP = "!dm:hs.test", "!group:hs.test"


@dataclass
class Rooms:
    one_to_one: set[tuple[str, str]]
    state_fetches: int = 0

    async def is_one_to_one(self, room_id: RoomId, user_id: UserId) -> bool:
        self.state_fetches += 1
        return (room_id, user_id) in self.one_to_one

    async def create_dm(self, user_id: UserId) -> RoomId:
        raise AssertionError("no DM should be created here")


@dataclass
class Relay:
    suspended: list[str] = field(default_factory=list)

    async def suspend_user(self, matrix_user_id: str) -> None:
        self.suspended.append(matrix_user_id)


async def _boom(ctx: CommandContext, args: tuple[str, ...]) -> None:
    raise RuntimeError("database said: token=SECRETSECRETSECRET123 is broken")


async def _echo(ctx: CommandContext, args: tuple[str, ...]) -> None:
    from bot.chat import Reply

    await ctx.reply(Reply.text("pong " + " ".join(args)))


@pytest.fixture
def world(sessions: async_sessionmaker[AsyncSession]) -> SimpleNamespace:
    registry = CommandRegistry()
    registry.add(Command("boom", "", "fails", _boom, dm_only=True))
    registry.add(Command("ping", "[x]", "answers", _echo, max_args=1, dm_only=True))
    matrix, rooms, relay = RecordingMatrix(), Rooms({(DM, ALICE)}), Relay()
    flows = SimpleNamespace(has_pending=_false, cancel=_zero)
    router = Router(
        matrix=matrix,
        dms=DmDirectory(sessions, rooms),
        commands=SimpleNamespace(registry=registry),  # type: ignore[arg-type]
        flows=flows,  # type: ignore[arg-type]
        handled=DatabaseHandledEvents(sessions),
        config=MatrixConfig(homeserver="https://hs.test", user_id=BOT, allowed_users=("@*:hs.test",)),
        throttle=UserThrottle(5, clock=lambda: 0.0),
        relay=relay,
        bot_user_id=BOT,
        clock=lambda: 0.0,
    )
    return SimpleNamespace(router=router, matrix=matrix, rooms=rooms, relay=relay, sessions=sessions)


async def _false(user: str) -> bool:
    return False


async def _zero(user: str) -> int:
    return 0


def message(sender: str, room: str, body: str, event: str = "$e1") -> IncomingMessage:
    return IncomingMessage(RoomId(room), EventId(event), UserId(sender), body, None, "m.text", True, 0)


async def settle(router: Router) -> None:
    """Let every started command finish (the grace only bounds a hang)."""
    await router.aclose(grace=60)


async def test_an_internal_error_gives_a_reference_never_the_exception_text(
    world: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        await world.router.handle(message(ALICE, DM, "!gts boom"))
        await settle(world.router)
    [(room, body)] = world.matrix.messages()
    assert room == DM
    ref = re.search(r"reference ([0-9a-f]{8})", body)
    assert ref is not None
    assert "SECRET" not in body
    assert "database" not in body
    assert ref.group(1) in caplog.text
    assert "RuntimeError" in caplog.text


async def test_users_who_are_not_allowed_get_nothing(world: SimpleNamespace) -> None:
    await world.router.handle(message(EVE, DM, "!gts ping"))
    await settle(world.router)
    assert world.matrix.messages() == []


async def test_a_replayed_command_event_is_acted_on_once(world: SimpleNamespace) -> None:
    for _ in range(3):
        await world.router.handle(message(ALICE, DM, "!gts ping x", event="$same"))
    await settle(world.router)
    assert world.matrix.messages() == [(DM, "pong x")]


async def test_ordinary_group_chat_costs_no_write_and_no_state_fetch(world: SimpleNamespace) -> None:
    for i in range(20):
        await world.router.handle(message(ALICE, GROUP, f"just chatting {i}", event=f"$chat{i}"))
    await settle(world.router)
    async with world.sessions() as session:
        handled = (await session.execute(select(func.count()).select_from(HandledEvent))).scalar_one()
    assert handled == 0
    assert world.rooms.state_fetches == 0
    assert world.matrix.messages() == []


async def test_commands_of_one_user_run_in_order(world: SimpleNamespace) -> None:
    for i in range(4):
        await world.router.handle(message(ALICE, DM, f"!gts ping {i}", event=f"$p{i}"))
    await settle(world.router)
    assert [body for _, body in world.matrix.messages()] == [f"pong {i}" for i in range(4)]


async def test_the_throttle_answers_once_then_stays_quiet(world: SimpleNamespace) -> None:
    for i in range(8):
        await world.router.handle(message(ALICE, DM, f"!gts ping {i}", event=f"$t{i}"))
    await settle(world.router)
    bodies = [body for _, body in world.matrix.messages()]
    assert bodies.count("You are sending commands too quickly; I'll ignore them for a minute.") == 1
    assert len([b for b in bodies if b.startswith("pong")]) == 5


async def test_leaving_the_dm_suspends_relaying(world: SimpleNamespace) -> None:
    await world.router.handle(message(ALICE, DM, "!gts ping", event="$p"))
    await settle(world.router)  # the DM is now recorded
    await world.router.handle(MemberLeft(RoomId(DM), UserId(ALICE)))
    assert world.relay.suspended == [ALICE]
    await world.router.handle(MemberLeft(RoomId(GROUP), UserId(ALICE)))
    assert world.relay.suspended == [ALICE]


async def test_a_slow_command_does_not_hold_up_others(world: SimpleNamespace) -> None:
    gate = asyncio.Event()

    async def slow(ctx: CommandContext, args: tuple[str, ...]) -> None:
        await gate.wait()

    world.router._commands.registry.add(Command("slow", "", "waits", slow, dm_only=True))
    world.rooms.one_to_one.add((DM, "@bob:hs.test"))
    await world.router.handle(message(ALICE, DM, "!gts slow", event="$slow"))
    # handle() must not wait for alice's command (it never ends before the gate opens); 60 s bounds a hang
    await asyncio.wait_for(world.router.handle(message("@bob:hs.test", DM, "!gts ping", event="$b")), 60)
    await wait_until(lambda: world.matrix.messages() != [], what="bob's answer while alice's command waits")
    assert world.matrix.messages() == [(DM, "pong ")]
    gate.set()
    await settle(world.router)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("ZGM2OGI4NDYTY2FJZS0ZMTM5LWI0YWYTZDMWNDCZZTC3NZJK", True),  # GoToSocial's shape
        ("ZGMXOGIXNDYTYXFJZSXZMTMXLWIXYWYTZDMWNDCZZTCXNZJK", True),  # …even without a digit
        ("`ZGM2OGI4NDYTY2FJZS0ZMTM5LWI0YWYTZDMWNDCZZTC3NZJK`", True),
        ("https://social.example/oauth/oob?code=ZGM2OGI4NDYTY2FJZS0ZMTM5LWI0YWYTZDMWNDCZZTC3NZJK", True),
        ("Xq3_2Jd8sK1l0pQmNvB7cZ4tR6yW9eUaHoIfGgLkMn0", True),  # Mastodon's shape
        ("internationalization", False),
        ("hello there, how are you doing today?", False),
        ("see https://example.org/some/page", False),
        ("short1", False),
        ("", False),
    ],
)
def test_what_counts_as_a_pasted_code(body: str, expected: bool) -> None:
    assert looks_like_pasted_code(body) is expected
