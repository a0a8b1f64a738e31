"""Authorization codes posted where they do not belong: recognise them, burn them, remove them, warn.

A code is a secret: it belongs only in the sender's 1:1 DM. One pasted in any other room is redeemed by
the bot and its token revoked (so nobody who saw it can use it), the message redacted, the pending
connection cancelled, and the sender warned in their DM. The code itself never reaches the log.
"""

from __future__ import annotations

import logging
from typing import Protocol

from bot.fediverse.oauth import code_in_sentence, extract_code, is_code_shaped
from bot.matrix.types import EventId, IncomingMessage, RoomId
from bot.rich_text import RichText

__all__ = ["LeakNotices", "LeakedCodes", "PendingFlows", "looks_like_pasted_code"]

log = logging.getLogger(__name__)

def looks_like_pasted_code(body: str) -> bool:
    """A message that is an authorization code (or the OOB URL carrying one), alone or as the one
    code-shaped word of a sentence ("here: <code>").

    Stricter than `extract_code`: words of chat, and a code broken across lines, do not count, so
    ordinary chat is never taken for a code (which would use up the user's pending flow).
    """
    text = body.strip()
    if not text:
        return False
    if not any(ch.isspace() for ch in text):
        if "code=" in text:
            return extract_code(text) is not None
        return is_code_shaped(text.strip("`'\""))
    in_sentence = code_in_sentence(text)
    return in_sentence is not None and extract_code(in_sentence) is not None


class PendingFlows(Protocol):
    """The connect flows, as far as a leaked code concerns them (`bot.connect.ConnectFlows`)."""

    async def has_pending(self, user_id: str) -> bool: ...

    async def cancel(self, user_id: str) -> int: ...

    async def burn(self, user_id: str, code: str) -> bool:
        """Redeem `code` for the user's pending flow and revoke the token; False when it did not work."""
        ...


class LeakNotices(Protocol):
    async def send_notice(
        self, room_id: RoomId, body: str, html: str, *, txn_id: str | None = None
    ) -> EventId: ...

    async def redact(self, room_id: RoomId, event_id: EventId, reason: str | None = None) -> bool: ...


class DmOpener(Protocol):
    async def ensure(self, user_id: str) -> str:
        """The user's DM room, created when there is none."""
        ...


class LeakedCodes:
    def __init__(self, *, flows: PendingFlows, matrix: LeakNotices, dms: DmOpener, prefix: str) -> None:
        self._flows = flows
        self._matrix = matrix
        self._dms = dms
        self._prefix = prefix

    async def is_leaked(self, msg: IncomingMessage, *, is_code_command: bool) -> bool:
        """Whether `msg` (posted outside the sender's DM) carries a code: a `code` command, or a paste
        that looks like one while the sender has a connection waiting for it."""
        if is_code_command:
            return True
        return looks_like_pasted_code(msg.body) and await self._flows.has_pending(msg.sender)

    async def handle(self, msg: IncomingMessage, code: str | None) -> None:
        """Burn the code, remove the message, warn the sender in their DM.

        Burning (redeeming the code and revoking the token) comes first: it is what makes the code
        useless to everyone who saw it; the redaction only tidies up.
        """
        burned = code is not None and await self._flows.burn(msg.sender, code)
        if not burned:
            await self._flows.cancel(msg.sender)
        redacted = await self._matrix.redact(
            RoomId(msg.room_id), EventId(msg.event_id), "authorization codes belong in a private chat"
        )
        log.warning(
            "a code was posted by %s in non-DM room %s; burned=%s, redacted=%s",
            msg.sender,
            msg.room_id,
            burned,
            redacted,
        )
        removed = (
            "I removed that message."
            if redacted
            else "I could not remove that message: please delete it yourself."
        )
        used_up = (
            "I used that code up myself and revoked the access it gave, so nobody who saw it can use it."
            if burned
            else "If it was a valid code, deny or revoke the access on your instance to be safe."
        )
        warning = RichText.text(
            "You posted what looks like an authorization code in a room other than this private chat. "
            f"{used_up} {removed} Your pending connection is cancelled. Start again here with: "
            f"{self._prefix} connect your.instance"
        )
        dm = await self._dms.ensure(msg.sender)
        await self._matrix.send_notice(RoomId(dm), warning.plain, warning.html)
