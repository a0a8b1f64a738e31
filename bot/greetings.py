"""What the bot says to a room without being asked: a welcome, why a message could not be read, and
that a DM stopped being private. Pure: texts in, `RichText` out."""

from __future__ import annotations

from bot.rich_text import RichText

__all__ = ["dm_not_private", "undecryptable", "welcome"]


def welcome(prefix: str) -> RichText:
    """The first words in a new DM."""
    return RichText.text(
        "Hi! I relay notifications from your fediverse account into this chat.\n"
        f"Connect one with: {prefix} connect your.instance — or see: {prefix} help"
    )


def undecryptable(reason: str) -> RichText:
    """Why the bot could not read an encrypted message, and what the sender can do about it."""
    why = (
        "your device did not share the message's key with my device"
        if reason == "missing_room_key"
        else "decrypting it failed"
    )
    return RichText.text(
        f"I could not read your encrypted message: {why}. Your client may be set to send keys only "
        "to verified devices; allow sending to unverified devices for this chat (or verify my "
        "device), then send the message again."
    )


def dm_not_private() -> RichText:
    """A generic line: whoever else is in the room must learn nothing about the user's notifications."""
    return RichText.text(
        "This chat is no longer private between you and me, so I stopped relaying notifications here. "
        "Send me any command and I'll open a new private chat for them."
    )
