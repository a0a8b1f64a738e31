"""A code pasted inside a sentence in a group room is burned like a bare one; ordinary chat burns nothing.

Real database, the fake GoToSocial over loopback, a recording Matrix side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.accounts import AccountsService
from bot.commands.handlers import BotCommands
from bot.commands.throttle import InstanceShare, UserThrottle
from bot.config import LimitsConfig, MatrixConfig
from bot.connect import ConnectFlows
from bot.dm_registry import DmDirectory
from bot.leaked_codes import looks_like_pasted_code
from bot.matrix.types import EventId, IncomingMessage, RoomId, UserId
from bot.router import Router
from bot.store.keyring import KeyRing
from bot.store.records import utc_now
from bot.store.session_store import DatabaseHandledEvents
from tests.fakes.gotosocial import FakeGoToSocial
from tests.fakes.matrix import RecordingMatrix
from tests.integration.fedi_support import fedi_client, settings

BOT, VICTIM = "@bot:hs.test", "@victim:hs.test"
VICTIM_DM, GROUP = "!victimdm:hs.test", "!group:hs.test"
PASSWORD = "Long-Strong-Passw0rd!"
GTS_CODE = "ZGM2OGI4NDYTY2FJZS0ZMTM5LWI0YWYTZDMWNDCZZTC3NZJK"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"here is my code: {GTS_CODE}", True),
        (f"ok `{GTS_CODE}` thanks", True),
        (f"done, https://social.example/oauth/oob?code={GTS_CODE} works", True),
        ("the build 3f9a2c1 passed, see you tomorrow", False),
        ("fixed in 3f9a2c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1, thanks", False),  # a commit hash
        ("hello there, how are you doing today?", False),
        (f"{GTS_CODE[:20]} {GTS_CODE[20:]}", False),  # pieces of one code: not chat with a code in it
    ],
)
def test_a_code_inside_a_sentence_counts_as_pasted(body: str, expected: bool) -> None:
    assert looks_like_pasted_code(body) is expected


@dataclass
class Rooms:
    async def is_one_to_one(self, room_id: RoomId, user_id: UserId) -> bool:
        return (room_id, user_id) == (VICTIM_DM, VICTIM)

    async def create_dm(self, user_id: UserId) -> RoomId:
        raise AssertionError("no DM should be created here")


class NoRelay:
    async def restart_account(self, account_id: object) -> None:
        return None

    async def remove_account(self, account_id: object) -> None:
        return None

    async def forget_user(self, matrix_user_id: str) -> None:
        return None

    async def suspend_user(self, matrix_user_id: str) -> None:
        return None


@dataclass
class Scene:
    gts: FakeGoToSocial
    flows: ConnectFlows
    matrix: RecordingMatrix
    router: Router

    async def pending_code(self) -> str:
        """A fresh code of the victim's, with their connection waiting for it."""
        started = await self.flows.start(VICTIM, self.gts.base_url, (), VICTIM_DM)
        return await self.gts.authorize(started.authorize_url, "victim@example.org", PASSWORD)

    async def say(self, room: str, body: str, event: str) -> None:
        message = IncomingMessage(RoomId(room), EventId(event), UserId(VICTIM), body, None, "m.text", True, 0)
        await self.router.handle(message)

    async def settle(self) -> None:
        """Every message handled (the grace only bounds a hang)."""
        await self.router.aclose(grace=60)


@pytest.fixture
async def scene(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> AsyncIterator[Scene]:
    async with FakeGoToSocial() as gts, fedi_client() as client:
        gts.add_user("victim", "victim@example.org", PASSWORD)
        flows = ConnectFlows(
            sessions=sessions,
            keyring=keyring,
            client=client,
            fediverse=settings(),
            limits=LimitsConfig(),
            flow_ttl=timedelta(minutes=10),
            on_connected=NoRelay().restart_account,
            share=InstanceShare(lambda: 0.0),
        )
        accounts = AccountsService(
            sessions=sessions, keyring=keyring, client=client, relay=NoRelay(), allow_http=True
        )
        matrix = RecordingMatrix(may_redact=True)
        dms = DmDirectory(sessions, Rooms())
        await dms.record(VICTIM, VICTIM_DM)
        router = Router(
            matrix=matrix,
            dms=dms,
            commands=BotCommands(flows=flows, accounts=accounts, clock=utc_now),
            flows=flows,
            handled=DatabaseHandledEvents(sessions),
            config=MatrixConfig(homeserver="https://hs.test", user_id=BOT, allowed_users=("@*:hs.test",)),
            throttle=UserThrottle(20, clock=lambda: 0.0),
            relay=NoRelay(),
            bot_user_id=BOT,
            clock=lambda: 0.0,
        )
        yield Scene(gts, flows, matrix, router)


async def test_a_code_pasted_inside_a_sentence_in_a_group_room_is_burned(scene: Scene) -> None:
    code = await scene.pending_code()
    await scene.say(GROUP, f"oops, is this it? {code} thanks", "$leak")
    await scene.settle()
    assert [event for _room, event, _reason in scene.matrix.redactions] == ["$leak"]
    assert scene.gts.active_tokens("victim") == []  # redeemed by the bot and revoked
    assert scene.gts.requests_to("/oauth/revoke") == 1
    assert not await scene.flows.has_pending(VICTIM)
    [(room, warning)] = scene.matrix.messages()
    assert room == VICTIM_DM
    assert "used that code up myself" in warning
    assert code not in warning


async def test_ordinary_chat_in_a_group_room_burns_nothing_while_a_code_is_awaited(scene: Scene) -> None:
    await scene.pending_code()
    for n, chat in enumerate(
        [
            "hello there, how are you doing today?",
            "the build 3f9a2c1 passed, see you tomorrow",
            "fixed in 3f9a2c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1, thanks",
            "internationalization is hard",
        ]
    ):
        await scene.say(GROUP, chat, f"$chat{n}")
    # A positive marker after the chat: the DM command is answered only once the chat was handled.
    await scene.say(VICTIM_DM, "!gts status", "$marker")
    await scene.settle()
    assert scene.matrix.redactions == []
    assert await scene.flows.has_pending(VICTIM)
    assert scene.gts.requests_to("/oauth/token") == 0
    assert [room for room, _body in scene.matrix.messages()] == [VICTIM_DM]


async def test_a_code_inside_a_sentence_in_the_dm_connects(scene: Scene) -> None:
    code = await scene.pending_code()
    await scene.say(VICTIM_DM, f"here it is: {code}", "$code")
    await scene.settle()
    [(room, reply)] = scene.matrix.messages()
    assert room == VICTIM_DM
    assert "Connected as" in reply
