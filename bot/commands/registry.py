"""The command registry: name, aliases, usage, help, where a command may run. Help is generated from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from bot.rich_text import RichText, bullets, code, paragraph


class CommandContext(Protocol):
    """What a handler knows about the message that invoked it and how it answers.

    Commands marked `dm_only` are run with a context whose room is the sender's DM, whatever room the
    command was typed in; the router tells the original room only that a DM was sent. Those also marked
    `refused_outside_dm` are not run at all when typed outside the DM.
    """

    @property
    def sender(self) -> str: ...

    @property
    def room_id(self) -> str:
        """Where replies go: the sender's DM for `dm_only` commands."""
        ...

    @property
    def prefix(self) -> str: ...

    @property
    def event_id(self) -> str:
        """The Matrix event that carried the command (the key of an action it asks for)."""
        ...

    @property
    def body(self) -> str:
        """The command's whole text as typed (for commands whose text is not just words)."""
        ...

    async def reply(self, reply: RichText) -> None: ...


Handler = Callable[[CommandContext, tuple[str, ...]], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    """Arguments after the command name, e.g. `<instance> [scopes]`."""
    summary: str
    handler: Handler = field(repr=False)
    aliases: tuple[str, ...] = ()
    min_args: int = 0
    max_args: int | None = 0
    dm_only: bool = False
    """Commands that carry or produce secrets only run in the sender's DM."""
    refused_outside_dm: bool = False
    """Typed anywhere else, the command does nothing; the sender is told so in their DM (`post`: what
    was typed in a shared room must not be published)."""

    def usage_line(self, prefix: str) -> str:
        return f"{prefix} {self.name} {self.usage}".rstrip()

    def accepts(self, args: tuple[str, ...]) -> bool:
        return len(args) >= self.min_args and (self.max_args is None or len(args) <= self.max_args)


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: list[Command] = []
        self._by_name: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        for name in (command.name, *command.aliases):
            if name in self._by_name:
                raise ValueError(f"command name {name!r} registered twice")
            self._by_name[name] = command
        self._commands.append(command)

    def get(self, name: str) -> Command | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands)

    def help(self, prefix: str) -> RichText:
        rows = []
        for cmd in self._commands:
            alias = f" (alias: {', '.join(cmd.aliases)})" if cmd.aliases else ""
            rows.append(code(cmd.usage_line(prefix)) + RichText.text(f" — {cmd.summary}{alias}"))
        return paragraph(RichText.text("Commands:")) + bullets(rows)
