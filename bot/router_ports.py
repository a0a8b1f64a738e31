"""The ports the router and the action dispatcher depend on: small protocols that the composition root
(`bot.app`) fills with the real pieces and tests fill with recording fakes."""

from __future__ import annotations

from typing import Protocol

from bot.commands.registry import CommandContext, CommandRegistry
from bot.matrix.types import EventId, RoomId
from bot.store.action_journal import ActionRecord

__all__ = ["Actions", "Commands", "DmRooms", "HandledEvents", "MatrixPort", "RelayUsers"]


class MatrixPort(Protocol):
    async def send_notice(
        self, room_id: RoomId, body: str, html: str, *, txn_id: str | None = None
    ) -> EventId: ...

    async def join(self, room_id: RoomId) -> RoomId: ...

    async def leave(self, room_id: RoomId) -> None: ...

    async def redact(self, room_id: RoomId, event_id: EventId, reason: str | None = None) -> bool: ...


class RelayUsers(Protocol):
    async def suspend_user(self, matrix_user_id: str) -> None:
        """Stop relaying to the user until a new DM is recorded (nothing is lost meanwhile)."""
        ...


class DmRooms(Protocol):
    """Each user's 1:1 DM with the bot (`bot.dm_registry.DmDirectory`)."""

    async def room_for(self, user_id: str) -> str | None: ...

    async def is_dm(self, user_id: str, room_id: str) -> bool: ...

    async def ensure(self, user_id: str) -> str:
        """The user's DM room, created when there is none."""
        ...

    async def recheck(self, room_id: str) -> None:
        """Look again whether the room is still a private 1:1 chat (it tells its observers if not)."""
        ...

    async def forget_room(self, user_id: str, room_id: str) -> bool: ...

    async def forget_room_of_any_user(self, room_id: str) -> str | None: ...


class Commands(Protocol):
    """The chat commands (`bot.commands.handlers.BotCommands`)."""

    @property
    def registry(self) -> CommandRegistry: ...

    async def submit_code(self, ctx: CommandContext, pasted: str) -> None:
        """A code pasted without the `code` command, while a connection waits for it."""
        ...


class HandledEvents(Protocol):
    async def mark_handled(self, event_id: str, room_id: str) -> bool:
        """False when the event was handled before (a replay after a restart)."""
        ...


class Actions(Protocol):
    """Acting on relayed messages (`bot.actions.service.ActionService`); replies go through `ctx`."""

    async def react(self, ctx: CommandContext, event_id: str, relates_to: str, key: str) -> None: ...

    async def take_back(self, ctx: CommandContext, event_id: str, redacts: str) -> None: ...

    async def is_relayed(self, event_id: str) -> bool:
        """Whether `event_id` is a message the bot relayed (a reply to it acts on the fediverse)."""
        ...

    async def reply(self, ctx: CommandContext, event_id: str, reply_to: str, text: str) -> None: ...

    async def note_reaction(
        self, sender: str, room_id: str, event_id: str, relates_to: str, key: str
    ) -> None:
        """Make a reaction's action durable at intake (before the sync token is saved)."""
        ...

    async def note_redaction(self, sender: str, room_id: str, event_id: str, redacts: str) -> None:
        """Make the undoing of a reaction's action durable at intake (before the sync token is saved)."""
        ...

    async def note_reply(self, sender: str, room_id: str, event_id: str, reply_to: str, text: str) -> None:
        """Make a reply's action durable at intake (before the sync token is saved)."""
        ...

    async def note_post(self, sender: str, room_id: str, event_id: str, rest: str) -> None:
        """Make a `post` command durable at intake (before the sync token is saved), if it is one that
        will run: typed in the sender's DM, for an account that can act."""
        ...

    async def withdraw(self, event_id: str) -> None:
        """Drop what intake wrote for a command that is refused (so no restart resumes it)."""
        ...

    async def unfinished(self) -> list[ActionRecord]: ...

    async def resume(self, ctx: CommandContext, entry: ActionRecord) -> None: ...
