"""Running what a Matrix event asked for: the room it answers in, and the deadline and error replies every
command and action shares.

A `UserFacingError` is shown as it is; a timeout gets a fixed line; anything else is logged with a
reference and the user is told only that reference (exception text never reaches a room).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.errors import UserFacingError, new_reference
from bot.matrix.types import RoomId
from bot.rich_text import RichText
from bot.router_ports import MatrixPort

__all__ = ["COMMAND_DEADLINE_SECONDS", "RoomContext", "run_guarded"]

log = logging.getLogger(__name__)

COMMAND_DEADLINE_SECONDS = 120


@dataclass(frozen=True)
class RoomContext:
    """A `CommandContext`: who asked, and the room its answers go to."""

    sender: str
    room_id: str
    prefix: str
    matrix: MatrixPort
    event_id: str = ""
    body: str = ""  # the message as typed (a reply's quoted fallback removed)

    async def reply(self, reply: RichText) -> None:
        await self.matrix.send_notice(RoomId(self.room_id), reply.plain, reply.html)


async def run_guarded(ctx: RoomContext, action: Callable[[], Awaitable[None]], name: str) -> None:
    """Run `action` within `COMMAND_DEADLINE_SECONDS`, answering its failures in `ctx`'s room."""
    try:
        async with asyncio.timeout(COMMAND_DEADLINE_SECONDS):
            await action()
    except UserFacingError as exc:
        await ctx.reply(RichText.text(str(exc)))
    except TimeoutError:
        log.warning("command %r from %s took longer than %d s", name, ctx.sender, COMMAND_DEADLINE_SECONDS)
        await ctx.reply(
            RichText.text("That took too long (the instance answered too slowly). Try again later.")
        )
    except Exception:
        ref = new_reference()
        log.exception("command %r from %s failed [ref %s]", name, ctx.sender, ref)
        await ctx.reply(RichText.text(f"Something went wrong on my side (reference {ref}). Try again later."))
