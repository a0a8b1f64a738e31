"""Turning a message body into a command: pure, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ParsedCommand:
    name: str
    args: tuple[str, ...]


def parse_command(body: str, prefix: str) -> ParsedCommand | None:
    """`!gts connect example.org read` → ParsedCommand("connect", ("example.org", "read")).

    Returns None when the message is not addressed to the bot. The prefix alone means `help`.
    The prefix must stand alone as the first word, so `!gtsfoo` is not a command.
    """
    words = body.strip().split()
    if not words or words[0].lower() != prefix.lower():
        return None
    if len(words) == 1:
        return ParsedCommand("help", ())
    return ParsedCommand(words[1].lower(), tuple(words[2:]))


_COMMAND_WORDS = re.compile(r"\s*\S+\s+\S+")  # the prefix and the command's name


def after_command_words(body: str) -> str | None:
    """What follows the prefix and the command's name in `body`, as typed (None: there is no name)."""
    words = _COMMAND_WORDS.match(body)
    return body[words.end() :] if words is not None else None
