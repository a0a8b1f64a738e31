"""Operator tools behind the `gts-bot accounts …` and `migrate-db` commands (their CLI is in `bot.cli`)."""

from __future__ import annotations

from bot.errors import GtsBotError

__all__ = ["EXIT_NOTHING_SELECTED", "EXIT_REFUSED", "OperatorError"]


class OperatorError(GtsBotError):
    """An operator command refused to act. Its text is for the operator and never holds a secret."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


EXIT_NOTHING_SELECTED = 2
"""The command line names no account (unknown user, or no account matches --account)."""
EXIT_REFUSED = 65
"""The data is not what the command needs (EX_DATAERR): e.g. migrate-db's target already holds data."""
