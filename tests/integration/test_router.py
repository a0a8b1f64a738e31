"""The router's rules with a recording Matrix side and a real database: who is answered, where, how often."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.commands.registry import Command, CommandContext, CommandRegistry
from bot.dm_registry import DmDirectory
from bot.leaked_codes import looks_like_pasted_code
from bot.matrix.sender import FairSender, RateLimitTracker
from bot.matrix.types import (
    EventId,
    Invite,
    MemberLeft,
    RoomChanged,
    RoomId,
    UndecryptableMessage,
    UserId,
)
from bot.router import Router
from bot.router_ports import MatrixPort
from bot.store.keyring import KeyRing
from bot.store.models import HandledEvent
from bot.store.session_store import DatabaseHandledEvents
from bot.user_lanes import MAX_QUEUED_PER_USER
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.matrix import RecordingMatrix
from tests.integration.fedi_support import fedi_client
from tests.integration.router_support import (
    NoFlows,
    Relay,
    Rooms,
    build_router,
    command_side,
    message,
)
from tests.waiting import wait_until

ALICE, EVE = "@alice:hs.test", "@eve:elsewhere.test"
DM, GROUP = "!dm:hs.test", "!group:hs.test"


async def _boom(ctx: CommandContext, args: tuple[str, ...]) -> None:
    raise RuntimeError("database said: token=SECRETSECRETSECRET123 is broken")


async def _echo(ctx: CommandContext, args: tuple[str, ...]) -> None:
    from bot.rich_text import RichText

    await ctx.reply(RichText.text("pong " + " ".join(args)))


@dataclass
class RegistryOnly:
    """Commands from a registry of test handlers; a pasted code is never expected here."""

    registry: CommandRegistry

    async def submit_code(self, ctx: CommandContext, pasted: str) -> None:
        raise AssertionError("no code should be submitted here")


@dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    matrix: RecordingMatrix = field(default_factory=RecordingMatrix)
    rooms: Rooms = field(default_factory=lambda: Rooms({(DM, ALICE)}))
    relay: Relay = field(default_factory=Relay)
    registry: CommandRegistry = field(default_factory=CommandRegistry)

    def __post_init__(self) -> None:
        self.registry.add(Command("boom", "", "fails", _boom, dm_only=True))
        self.registry.add(Command("ping", "[x]", "answers", _echo, max_args=1, dm_only=True))
        self.dms = DmDirectory(self.sessions, self.rooms)
        self.router = self.router_with(self.matrix)

    def router_with(self, matrix: MatrixPort) -> Router:
        """A router over this world, sending through `matrix`."""
        return build_router(
            matrix=matrix,
            dms=self.dms,
            commands=RegistryOnly(self.registry),
            flows=NoFlows(),
            handled=DatabaseHandledEvents(self.sessions),
            relay=self.relay,
            commands_per_minute=5,
        )


@pytest.fixture
def world(sessions: async_sessionmaker[AsyncSession]) -> World:
    return World(sessions)


async def settle(router: Router) -> None:
    """Let every started command finish (the grace only bounds a hang)."""
    await router.aclose(grace=60)


async def test_an_internal_error_gives_a_reference_never_the_exception_text(
    world: World, caplog: pytest.LogCaptureFixture
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


async def test_users_who_are_not_allowed_get_nothing(world: World) -> None:
    await world.router.handle(message(EVE, DM, "!gts ping"))
    await settle(world.router)
    assert world.matrix.messages() == []


async def test_a_replayed_command_event_is_acted_on_once(world: World) -> None:
    for _ in range(3):
        await world.router.handle(message(ALICE, DM, "!gts ping x", event="$same"))
    await settle(world.router)
    assert world.matrix.messages() == [(DM, "pong x")]


async def test_ordinary_group_chat_costs_no_write_and_no_state_fetch(world: World) -> None:
    for i in range(20):
        await world.router.handle(message(ALICE, GROUP, f"just chatting {i}", event=f"$chat{i}"))
    await settle(world.router)
    async with world.sessions() as session:
        handled = (await session.execute(select(func.count()).select_from(HandledEvent))).scalar_one()
    assert handled == 0
    assert world.rooms.state_fetches == 0
    assert world.matrix.messages() == []


async def test_commands_of_one_user_run_in_order(world: World) -> None:
    for i in range(4):
        await world.router.handle(message(ALICE, DM, f"!gts ping {i}", event=f"$p{i}"))
    await settle(world.router)
    assert [body for _, body in world.matrix.messages()] == [f"pong {i}" for i in range(4)]


async def test_the_throttle_answers_once_then_stays_quiet(world: World) -> None:
    for i in range(8):
        await world.router.handle(message(ALICE, DM, f"!gts ping {i}", event=f"$t{i}"))
    await settle(world.router)
    bodies = [body for _, body in world.matrix.messages()]
    assert bodies.count("You are sending commands too quickly; I'll ignore them for a minute.") == 1
    assert len([b for b in bodies if b.startswith("pong")]) == 5


async def test_leaving_the_dm_suspends_relaying(world: World) -> None:
    await world.router.handle(message(ALICE, DM, "!gts ping", event="$p"))
    await settle(world.router)  # the DM is now recorded
    await world.router.handle(MemberLeft(RoomId(DM), UserId(ALICE)))
    await settle(world.router)
    assert world.relay.suspended == [ALICE]
    await world.router.handle(MemberLeft(RoomId(GROUP), UserId(ALICE)))
    await settle(world.router)
    assert world.relay.suspended == [ALICE]


async def test_a_slow_command_does_not_hold_up_others(world: World) -> None:
    gate = asyncio.Event()

    async def slow(ctx: CommandContext, args: tuple[str, ...]) -> None:
        await gate.wait()

    world.registry.add(Command("slow", "", "waits", slow, dm_only=True))
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


class RateLimitedMatrix(RecordingMatrix):
    """Sends go through the adapter's FairSender; the homeserver accepts nothing until `open` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.sender = FairSender(RateLimitTracker())
        self.open = asyncio.Event()

    async def send_notice(
        self, room_id: RoomId, body: str, html: str, *, txn_id: str | None = None
    ) -> EventId:
        async def once() -> EventId:
            await self.open.wait()
            return await RecordingMatrix.send_notice(self, room_id, body, html)

        return await self.sender.run(room_id, once)

    async def join(self, room_id: RoomId) -> RoomId:
        await self.open.wait()
        self.joined.append(room_id)
        return room_id


async def _help(ctx: CommandContext, args: tuple[str, ...]) -> None:
    from bot.rich_text import RichText

    await ctx.reply(RichText.text("the help text"))


FLOODER, BOB = "@flooder:hs.test", "@bob:hs.test"
FLOOD_DM, BOB_DM = "!flooddm:hs.test", "!bobdm:hs.test"


async def test_a_flooder_does_not_stall_the_sync_loop_or_sit_ahead_of_another_users_reply(
    world: World,
) -> None:
    matrix = RateLimitedMatrix()
    router = world.router_with(matrix)
    world.registry.add(Command("help", "", "helps", _help, max_args=None))
    world.rooms.one_to_one |= {(FLOOD_DM, FLOODER), (BOB_DM, BOB)}
    await world.dms.record(FLOODER, FLOOD_DM)
    # The flooder's DM already has a backlog of relayed notifications waiting for the homeserver.
    backlog = [asyncio.create_task(matrix.send_notice(RoomId(FLOOD_DM), f"relay {i}", "")) for i in range(50)]

    async def sync_loop() -> None:  # as the adapter does: each event's handler awaited in turn
        for i in range(200):
            await router.handle(message(FLOODER, FLOOD_DM, f"spam line {i}", event=f"$spam{i}"))
        await router.handle(
            UndecryptableMessage(RoomId(FLOOD_DM), EventId("$u"), UserId(FLOODER), "missing_room_key", 0)
        )
        await router.handle(Invite(RoomId("!elsewhere:hs.test"), UserId(FLOODER), False))
        await router.handle(message(BOB, BOB_DM, "!gts help", event="$help"))

    # The homeserver accepts nothing yet, and still the sync loop gets through every event.
    await asyncio.wait_for(sync_loop(), timeout=30)
    assert matrix.messages() == []

    # Wait until the replies are queued behind the backlog (one relay in flight, 49 waiting): the
    # flooder's hint (their key notice waits behind it in their own lane) and bob's help.
    await wait_until(lambda: matrix.sender.queued == 49 + 2, what="replies queued")
    matrix.open.set()
    await settle(router)
    await asyncio.gather(*backlog)
    bodies = [body for _, body in matrix.messages()]
    assert bodies.index("the help text") <= 2  # bob's turn comes after at most one flooder send
    flooder_replies = [b for room, b in matrix.messages() if room == FLOOD_DM and not b.startswith("relay")]
    assert len(flooder_replies) == 2  # one "I only understand commands" hint and one key notice
    assert [b for b in bodies if b.startswith("relay")] == [f"relay {i}" for i in range(50)]
    assert matrix.joined == ["!elsewhere:hs.test"]


async def test_a_code_leaked_in_a_group_room_is_burned_before_another_member_can_redeem_it(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    victim, other = "@victim:hs.test", "@other:hs.test"
    victim_dm, other_dm = "!victimdm:hs.test", "!otherdm:hs.test"
    async with FakeGoToSocial() as gts, fedi_client() as client:
        gts.add_user("victim", "victim@example.org", "Long-Strong-Passw0rd!")
        matrix = RecordingMatrix(may_redact=True)
        rooms = Rooms({(victim_dm, victim), (other_dm, other)})
        side = command_side(
            sessions,
            keyring,
            client,
            matrix=matrix,
            dms=DmDirectory(sessions, rooms),
            relay=Relay(),
            commands_per_minute=20,
        )
        flows, accounts, router = side.flows, side.accounts, side.router
        await DmDirectory(sessions, rooms).record(victim, victim_dm)
        started = await flows.start(victim, gts.base_url, (), victim_dm)
        code = await gts.authorize(started.authorize_url, "victim@example.org", "Long-Strong-Passw0rd!")

        with caplog.at_level(logging.DEBUG):
            await router.handle(message(victim, GROUP, code, event="$leak"))  # pasted in the wrong room
            await settle(router)
        assert [event for _room, event, _reason in matrix.redactions] == ["$leak"]
        assert gts.active_tokens("victim") == []  # the bot redeemed the code and revoked the token
        assert gts.requests_to("/oauth/revoke") == 1
        assert not await flows.has_pending(victim)
        [(room, warning)] = matrix.messages()
        assert room == victim_dm
        assert "used that code up myself" in warning
        assert code not in caplog.text
        assert code not in warning

        # Another member who saw it starts their own connect to the same instance and pastes it.
        await router.handle(message(other, other_dm, f"!gts connect {gts.base_url}", event="$c"))
        await router.handle(message(other, other_dm, code, event="$steal"))
        await settle(router)
        assert "Connected as" not in matrix.messages()[-1][1]
        assert gts.active_tokens("victim") == []
        assert await accounts.for_user(other) == []


async def test_a_dm_that_stops_being_private_loses_its_relay_and_gets_only_a_generic_line(
    world: World,
) -> None:
    dms = world.dms
    dms.on_lost(world.router.dm_lost)
    await dms.record(ALICE, DM)
    await world.router.handle(RoomChanged(RoomId(DM), UserId(ALICE)))  # e.g. the topic… still 1:1
    await settle(world.router)
    assert world.relay.suspended == []
    assert await dms.room_for(ALICE) == DM

    world.rooms.one_to_one.discard((DM, ALICE))  # eve was invited (or the room made public)
    await world.router.handle(RoomChanged(RoomId(DM), UserId(EVE)))
    await world.router.handle(RoomChanged(RoomId(DM), UserId(EVE)))  # told once, not per change
    await settle(world.router)
    assert world.relay.suspended == [ALICE]
    assert await dms.room_for(ALICE) is None
    [(room, line)] = world.matrix.messages()
    assert room == DM
    assert "no longer private" in line


async def test_a_users_queue_is_bounded_and_the_excess_dropped_with_one_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    matrix = RateLimitedMatrix()  # joins wait for the homeserver: the user's queue fills up
    router = world.router_with(matrix)
    with caplog.at_level(logging.WARNING, logger="bot.user_lanes"):
        for i in range(MAX_QUEUED_PER_USER + 30):
            await router.handle(Invite(RoomId(f"!room{i}:hs.test"), UserId(ALICE), False))
    # The sync loop never yielded meanwhile: MAX_QUEUED_PER_USER wait, the rest were dropped.
    assert router.dropped == 30
    assert len([r for r in caplog.records if "dropping more" in r.getMessage()]) == 1
    matrix.open.set()
    await settle(router)
    assert len(matrix.joined) == MAX_QUEUED_PER_USER


async def test_the_undecryptable_notice_goes_only_into_the_users_dm(world: World) -> None:
    for room, event in ((GROUP, "$in-a-group"), (DM, "$in-the-dm")):
        await world.router.handle(
            UndecryptableMessage(RoomId(room), EventId(event), UserId(ALICE), "missing_room_key", 0)
        )
    await settle(world.router)
    [(room, _)] = world.matrix.messages()
    assert room == DM
