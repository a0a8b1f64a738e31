"""`gts-bot run`: the bot itself, until Ctrl-C or SIGTERM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.cli.common import start_logging

if TYPE_CHECKING:
    from bot.cli import Invocation

__all__ = ["run"]


def run(invocation: Invocation) -> int:
    config = invocation.load_config()
    start_logging(config, narrate_migrations=True)
    from bot.app import Role
    from bot.app import run as run_bot

    role = Role(getattr(invocation.args, "role", Role.ALL.value))
    return run_bot(config, role, getattr(invocation.args, "worker_id", None))
