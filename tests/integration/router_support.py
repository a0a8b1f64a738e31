"""Shared pieces of the command-side tests: recording fakes for the router's ports, a message builder, and
the command side (connect flows, accounts, actions, router) wired as `bot.app` wires it, over a real
database and a real fediverse client."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.accounts import AccountsService, RelayControl
from bot.action_dispatch import ActionDispatcher
from bot.actions.journal import ActionJournal
from bot.actions.service import ActionService
from bot.commands.handlers import BotCommands
from bot.commands.throttle import InstanceShare, UserThrottle
from bot.config import FediverseConfig, LimitsConfig, MatrixConfig
from bot.connect import ConnectFlows
from bot.dm_registry import DmDirectory
from bot.fediverse.client import FediverseClient
from bot.leaked_codes import PendingFlows
from bot.matrix.types import EventId, IncomingMessage, RoomId, UserId
from bot.router import Router
from bot.router_ports import Commands, HandledEvents, MatrixPort, RelayUsers
from bot.store.keyring import KeyRing
from bot.store.records import AccountId, utc_now
from bot.store.session_store import DatabaseHandledEvents
from tests.integration.fedi_support import settings

BOT = "@bot:hs.test"
HS_USERS = ("@*:hs.test",)


@dataclass
class Rooms:
    """The homeserver's room state as the DM registry asks for it: which (room, user) pairs are 1:1."""

    one_to_one: set[tuple[str, str]]
    state_fetches: int = 0

    async def is_one_to_one(self, room_id: RoomId, user_id: UserId) -> bool:
        self.state_fetches += 1
        return (room_id, user_id) in self.one_to_one

    async def create_dm(self, user_id: UserId) -> RoomId:
        raise AssertionError("no DM should be created here")


@dataclass
class Relay:
    """The relay side of the command path: records who was suspended, does nothing else."""

    suspended: list[str] = field(default_factory=list)

    async def suspend_user(self, matrix_user_id: str) -> None:
        self.suspended.append(matrix_user_id)

    async def restart_account(self, account_id: AccountId) -> None:
        return None

    async def remove_account(self, account_id: AccountId) -> None:
        return None

    async def forget_user(self, matrix_user_id: str) -> None:
        return None


class RelaySide(RelayControl, RelayUsers, Protocol):
    """What the command side needs of the relay (`RelayManager`, or `Relay` above)."""


@dataclass
class NoFlows:
    """No connection ever waits for a code."""

    async def has_pending(self, user_id: str) -> bool:
        return False

    async def cancel(self, user_id: str) -> int:
        return 0

    async def burn(self, user_id: str, code: str) -> bool:
        return False


class AlwaysNew:
    """Every event is new (no replay protection): a replay reaches the commands again."""

    async def mark_handled(self, event_id: str, room_id: str) -> bool:
        return True


def message(sender: str, room: str, body: str, event: str = "$e1") -> IncomingMessage:
    return IncomingMessage(RoomId(room), EventId(event), UserId(sender), body, None, "m.text", True, 0)


def flows_for(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    client: FediverseClient,
    relay: RelayControl,
    *,
    fediverse: FediverseConfig | None = None,
    limits: LimitsConfig | None = None,
    share: InstanceShare | None = None,
) -> tuple[ConnectFlows, AccountsService]:
    """Connect flows over loopback (`settings()` unless `fediverse` is given; connecting restarts the
    account on `relay`) and the accounts service beside them, as `bot.app` builds them."""
    flows = ConnectFlows(
        sessions=sessions,
        keyring=keyring,
        client=client,
        fediverse=fediverse or settings(),
        limits=limits or LimitsConfig(),
        flow_ttl=timedelta(minutes=10),
        on_connected=relay.restart_account,
        share=share or InstanceShare(time.monotonic),
    )
    accounts = AccountsService(
        sessions=sessions, keyring=keyring, client=client, relay=relay, allow_http=True
    )
    return flows, accounts


def matrix_config(allowed_users: tuple[str, ...] = HS_USERS) -> MatrixConfig:
    return MatrixConfig(homeserver="https://hs.test", user_id=BOT, allowed_users=allowed_users)


def build_router(
    *,
    matrix: MatrixPort,
    dms: DmDirectory,
    commands: Commands,
    flows: PendingFlows,
    handled: HandledEvents,
    relay: RelayUsers,
    commands_per_minute: int,
    allowed_users: tuple[str, ...] = HS_USERS,
    acting: ActionDispatcher | None = None,
) -> Router:
    """A router for `BOT` with a clock that stands still (so the throttle never refills)."""
    return Router(
        matrix=matrix,
        dms=dms,
        commands=commands,
        flows=flows,
        handled=handled,
        config=matrix_config(allowed_users),
        throttle=UserThrottle(commands_per_minute, clock=lambda: 0.0),
        relay=relay,
        bot_user_id=BOT,
        clock=lambda: 0.0,
        acting=acting,
    )


@dataclass
class CommandSide:
    flows: ConnectFlows
    accounts: AccountsService
    actions: ActionService
    router: Router


def command_side(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    client: FediverseClient,
    *,
    matrix: MatrixPort,
    dms: DmDirectory,
    relay: RelaySide,
    commands_per_minute: int = 100,
    handled: HandledEvents | None = None,
    journal: ActionJournal | None = None,
    fediverse: FediverseConfig | None = None,
    allowed_users: tuple[str, ...] = HS_USERS,
) -> CommandSide:
    """Commands, connect flows, accounts and actions behind one router, as `bot.app` wires them;
    events are marked handled in the database unless `handled` says otherwise."""
    flows, accounts = flows_for(sessions, keyring, client, relay, fediverse=fediverse)
    actions = ActionService(
        journal=journal or ActionJournal(sessions, keyring),
        writer=client.actions,
        credentials=client,
        allow_http=True,
        clock=lambda: 0.0,
    )
    router = build_router(
        matrix=matrix,
        dms=dms,
        commands=BotCommands(flows=flows, accounts=accounts, clock=utc_now, posting=actions),
        flows=flows,
        handled=handled or DatabaseHandledEvents(sessions),
        relay=relay,
        commands_per_minute=commands_per_minute,
        allowed_users=allowed_users,
        acting=ActionDispatcher(
            actions=actions, matrix=matrix, dms=dms, prefix=matrix_config(allowed_users).command_prefix
        ),
    )
    return CommandSide(flows, accounts, actions, router)
