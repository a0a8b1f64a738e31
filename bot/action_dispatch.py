"""Matrix events that act on relayed messages (reactions, their redaction, replies, `post`) → the action
service (`Actions`), with the command path's deadline and error replies.

The router decides whether and where the work runs (who is allowed, the throttle, the user's lane); this
dispatcher makes each action durable at intake (before the sync token moves on) and hands back the work
that does it. Answers go where the event was; the service itself only ever answers in the user's DM.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.command_run import RoomContext, run_guarded
from bot.matrix.types import IncomingMessage, Reaction, Redaction
from bot.router_ports import Actions, DmRooms, MatrixPort
from bot.store.action_journal import ActionRecord
from bot.user_lanes import Work

__all__ = ["ActionDispatcher"]

log = logging.getLogger(__name__)


async def _durably(noting: Awaitable[None]) -> None:
    """Write an action's intent before the sync token moves on; if that fails, the action still runs now
    (only a crash before it is done would lose it)."""
    try:
        await noting
    except Exception:
        log.exception("could not write an action to the journal at intake")


class ActionDispatcher:
    def __init__(self, *, actions: Actions, matrix: MatrixPort, dms: DmRooms, prefix: str) -> None:
        self._actions = actions
        self._matrix = matrix
        self._dms = dms
        self._prefix = prefix

    # ---- intake (on the sync loop) ----

    async def intake(self, event: Reaction | Redaction) -> Work:
        """Note what a reaction, or the redaction of one, asks for; the work that then does it."""
        actions = self._actions
        if isinstance(event, Reaction):
            await _durably(
                actions.note_reaction(
                    event.sender, event.room_id, event.event_id, event.relates_to, event.key
                )
            )
            return lambda: self._act(
                event, lambda ctx: actions.react(ctx, event.event_id, event.relates_to, event.key), "reaction"
            )
        await _durably(actions.note_redaction(event.sender, event.room_id, event.event_id, event.redacts))
        return lambda: self._act(
            event, lambda ctx: actions.take_back(ctx, event.event_id, event.redacts), "undo"
        )

    async def note_reply(self, msg: IncomingMessage, reply_to: str) -> None:
        await _durably(self._actions.note_reply(msg.sender, msg.room_id, msg.event_id, reply_to, msg.body))

    async def note_post(self, msg: IncomingMessage, rest: str) -> None:
        await _durably(self._actions.note_post(msg.sender, msg.room_id, msg.event_id, rest))

    # ---- on the user's lane ----

    async def reply(self, msg: IncomingMessage, reply_to: str) -> bool:
        """Act on a reply to `reply_to`; False (and nothing done) when the bot did not relay that."""
        actions = self._actions
        if not await actions.is_relayed(reply_to):
            return False
        await self._act(msg, lambda ctx: actions.reply(ctx, msg.event_id, reply_to, msg.body), "reply")
        return True

    async def withdraw(self, event_id: str) -> None:
        """A `post` noted at intake is refused now (not typed in the DM): nothing may resume it."""
        await self._actions.withdraw(event_id)

    async def _act(
        self,
        event: IncomingMessage | Reaction | Redaction,
        work: Callable[[RoomContext], Awaitable[None]],
        name: str,
    ) -> None:
        here = RoomContext(event.sender, event.room_id, self._prefix, self._matrix, event.event_id)
        await run_guarded(here, lambda: work(here), name)

    # ---- after a restart ----

    async def unfinished(self) -> list[tuple[str, Work]]:
        """Each action a stopped bot left unfinished (`Actions.unfinished`) as its user and the work that
        finishes it, answering in the user's DM; a user without a DM is skipped."""
        pending: list[tuple[str, Work]] = []
        for entry in await self._actions.unfinished():
            room = await self._dms.room_for(entry.matrix_user_id)
            if room is not None:
                here = RoomContext(entry.matrix_user_id, room, self._prefix, self._matrix, entry.event_id)
                pending.append((entry.matrix_user_id, self._resuming(here, entry)))
        return pending

    def _resuming(self, here: RoomContext, entry: ActionRecord) -> Work:
        actions = self._actions
        return lambda: run_guarded(here, lambda: actions.resume(here, entry), "resume")
