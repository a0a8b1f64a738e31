"""What several command modules share: logging set-up with every secret registered, and output helpers."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.admin import OperatorError
    from bot.cli import Invocation
    from bot.config import Config

__all__ = ["EXIT_OK", "describe_database", "refused", "start_logging"]

EXIT_OK = 0


def start_logging(config: Config | None, *database_urls: str, narrate_migrations: bool = False) -> None:
    """Log as `config` says (defaults without one), redacting its secrets and every given database URL.

    alembic narrates each migration step at INFO; only `run` keeps that (`narrate_migrations`), the other
    commands print their own summary.
    """
    import logging

    from sqlalchemy.engine import make_url

    from bot.config import LoggingConfig
    from bot.log import setup_logging

    settings = config.logging if config is not None else LoggingConfig()
    redactor = setup_logging(settings)
    if settings.level != "DEBUG" and not narrate_migrations:
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    if config is not None:
        for secret in (config.matrix.password, config.matrix.access_token):
            redactor.add_secret(secret)
        database_urls = (*database_urls, config.database.url)
    for url in database_urls:
        redactor.add_secret(url)
        redactor.add_secret(make_url(url).password)


def refused(invocation: Invocation, error: OperatorError) -> int:
    """Print why an operator command refused to act; its exit code says how."""
    print(f"gts-bot {' '.join(invocation.args.command.path)}: {error}", file=sys.stderr)
    return error.exit_code


def describe_database(url: str) -> str:
    """The database URL for people: a SQLite file by its path, any other URL without its password."""
    if url.startswith("sqlite"):
        return f"SQLite {url.partition(':///')[2]}"
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
