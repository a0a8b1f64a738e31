"""The `gts-bot` command line: a table of subcommands, their help, and the process exit codes.

Exit codes: 0 success; 1 unexpected error; 2 bad command line (also: `accounts revoke` names no
account); 65 an operator command refused the data (`migrate-db` into a non-empty database); a
`StartupError`'s own `exit_code` (78 configuration, 77 key file, 72 key file readable by others, 75
database newer than this code, or a live relay worker already has this `--worker-id`); 130 interrupted.

This module only builds the parser and dispatches, so `--help` and `check-config` start fast: it imports
nothing heavy (no store, HTTP stack, matrix-nio). Each command's code lives in one module beside it
(`bot.cli.run`, `.migrate`, `.check_config`, `.keys`, `.accounts`), named in the table by `Lazy` and
imported only when that command runs.

To add a command, write a handler `(Invocation) -> int` in one of those modules and add a `Subcommand`
to `SUBCOMMANDS` whose handler is `Lazy("bot.cli.module", "function")`; a command under a new group
(e.g. `accounts list`) also needs the group's help in `GROUPS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config_file import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, config_path

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["GROUPS", "SUBCOMMANDS", "Invocation", "Lazy", "Subcommand", "build_parser", "main"]

EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Invocation:
    """What a handler gets: the parsed arguments and the environment to read configuration from."""

    args: argparse.Namespace
    environ: Mapping[str, str] = field(repr=False)

    @property
    def config_file(self) -> Path | None:
        return config_path(getattr(self.args, "config", None), self.environ)

    def load_config(self) -> Config:
        from bot.config import load_config

        return load_config(self.config_file, self.environ)


Handler = Callable[[Invocation], int]


@dataclass(frozen=True)
class Lazy:
    """A handler that imports its module only when its command runs, so building the parser stays cheap."""

    module: str
    name: str

    def resolve(self) -> Handler:
        handler: Handler = getattr(importlib.import_module(self.module), self.name)
        return handler

    def __call__(self, invocation: Invocation) -> int:
        return self.resolve()(invocation)


@dataclass(frozen=True)
class Subcommand:
    path: tuple[str, ...]
    """Words that select it: ("run",) or ("keys", "generate")."""
    summary: str
    """One sentence, listed in the parent's --help."""
    description: str
    """The command's own --help text."""
    handler: Handler = field(repr=False)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = field(default=None, repr=False)


# -- arguments (part of the parser, so they live here) -----------------------------------------------


def _key_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="PATH",
        help="Write the key file here instead of to encryption.key_file (no configuration is read then).",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role",
        choices=("all", "matrix", "relay"),
        default="all",
        help="all: everything in one process (default). With PostgreSQL, split it: one `matrix` process "
        "(Matrix sync, commands, E2EE, sending) and any number of `relay` workers (they share the "
        "fediverse accounts through leases in the database).",
    )
    parser.add_argument(
        "--worker-id",
        metavar="ID",
        help="A relay worker's name in `accounts list` and the metrics (default: HOSTNAME-PID). "
        "Give each running worker its own.",
    )


def _accounts_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="@USER:SERVER", help="Only this Matrix user's accounts.")
    parser.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")


def _accounts_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, metavar="@USER:SERVER", help="The Matrix user.")
    parser.add_argument(
        "--account",
        metavar="ACCT|all",
        help="Which of the user's accounts, as user@instance (see `accounts list`), or all; "
        "may be left out when the user has only one.",
    )


def _migrate_db_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", required=True, metavar="URL",
        help="The database to copy, e.g. sqlite+aiosqlite:///data/gts-bot.sqlite3 (only read).",
    )  # fmt: skip
    parser.add_argument(
        "--to", dest="target", required=True, metavar="URL",
        help="The empty database to fill, e.g. postgresql+asyncpg://gts:PASSWORD@db/gts.",
    )  # fmt: skip


# -- the table --------------------------------------------------------------------------------------

GROUPS: Mapping[tuple[str, ...], str] = {
    ("keys",): "Manage the key file that encrypts the tokens and secrets stored in the database.",
    ("accounts",): "See and revoke the fediverse accounts users have connected (for operators).",
}

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        ("run",),
        "Run the bot (the default when no command is given).",
        "Run the bot: log in to Matrix, apply database migrations, answer commands and relay "
        "notifications until stopped with Ctrl-C or SIGTERM.",
        Lazy("bot.cli.run", "run"),
        _run_arguments,
    ),
    Subcommand(
        ("migrate",),
        "Upgrade the database schema to this version and exit.",
        "Upgrade the database schema to the newest revision this version knows, then exit. "
        "Refuses to touch a database written by a newer gts-bot.",
        Lazy("bot.cli.migrate", "migrate"),
    ),
    Subcommand(
        ("check-config",),
        "Check the configuration and list every problem.",
        "Load the configuration file and GTS_BOT_* environment variables, list every problem at once "
        "(exit code 78), or print a short summary without secrets when all is well.",
        Lazy("bot.cli.check_config", "check_config"),
    ),
    Subcommand(
        ("keys", "generate"),
        "Create a new key file; never overwrites one.",
        "Create a new key file (mode 0600) at encryption.key_file or --key-file. It refuses to overwrite "
        "an existing file, since that would make every stored token unreadable.",
        Lazy("bot.cli.keys", "generate"),
        _key_file_arguments,
    ),
    Subcommand(
        ("keys", "rotate"),
        "Add a new key and re-encrypt every stored secret with it.",
        "Add a new current key to the key file and re-encrypt every stored secret with it. The old "
        "keys stay in the file, so older backups remain readable.",
        Lazy("bot.cli.keys", "rotate"),
    ),
    Subcommand(
        ("keys", "retire"),
        "Remove the old keys once no stored secret needs them.",
        "Remove every key but the current one from the key file, after checking that every stored secret "
        "decrypts with the current key alone (run `keys rotate` first). Database backups from before the "
        "rotation then need a copy of the previous key file. Run it with the bot stopped.",
        Lazy("bot.cli.keys", "retire"),
    ),
    Subcommand(
        ("accounts", "list"),
        "List connected accounts, without any secret.",
        "List the connected fediverse accounts (all, or one user's with --user): Matrix user, account, "
        "instance, state, notification types, relay cursor, created and updated times. Tokens are never "
        "read.",
        Lazy("bot.cli.accounts", "list_accounts"),
        _accounts_list_arguments,
    ),
    Subcommand(
        ("accounts", "revoke"),
        "Revoke a user's accounts on their instances and delete them here.",
        "Revoke a user's connected accounts on their instances (best effort) and delete their tokens and "
        "cursors here, as the user's own revoke command does. Run it with the bot stopped: a running bot "
        "keeps the token it loaded until the instance rejects it or the bot restarts.",
        Lazy("bot.cli.accounts", "revoke_accounts"),
        _accounts_revoke_arguments,
    ),
    Subcommand(
        ("migrate-db",),
        "Copy all data into another, empty database (e.g. SQLite to PostgreSQL).",
        "Copy every row from the --from database into the empty --to database (e.g. SQLite to "
        "PostgreSQL), secrets still encrypted, in one transaction, then check the row counts. The target "
        "is migrated first; a target that already holds data is refused (exit code 65). Stop the bot "
        "first.",
        Lazy("bot.cli.migrate", "migrate_db"),
        _migrate_db_arguments,
    ),
)

DEFAULT_COMMAND = ("run",)


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a sub-parser's default must not overwrite a -c given before the command name.
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"Configuration file (default: ${CONFIG_PATH_ENV}, else ./{DEFAULT_CONFIG_PATH} if it exists; "
        "GTS_BOT_* environment variables override it).",
    )


def build_parser(commands: tuple[Subcommand, ...] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gts-bot",
        description="A Matrix bot that connects Matrix users to their GoToSocial or Mastodon accounts and "
        "relays their notifications.",
    )
    _add_config_option(parser)
    by_path = {c.path: c for c in commands}
    parser.set_defaults(command=by_path[DEFAULT_COMMAND])
    groups: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {
        (): parser.add_subparsers(title="commands", metavar="COMMAND")
    }
    for command in commands:
        for depth in range(1, len(command.path)):
            prefix = command.path[:depth]
            if prefix not in groups:
                text = GROUPS[prefix]
                group = groups[prefix[:-1]].add_parser(prefix[-1], help=text, description=text)
                groups[prefix] = group.add_subparsers(title="commands", required=True)
        sub = groups[command.path[:-1]].add_parser(
            command.path[-1], help=command.summary, description=command.description
        )
        _add_config_option(sub)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        sub.set_defaults(command=command)
    return parser


# -- entry point ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run one command line; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    from bot.errors import StartupError  # after parsing: `--help` imports nothing it does not need

    invocation = Invocation(args, os.environ if environ is None else environ)
    command: Subcommand = args.command
    try:
        return command.handler(invocation)
    except StartupError as exc:
        print(f"gts-bot: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gts-bot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _unexpected(command, exc)


def _unexpected(command: Subcommand, exc: Exception) -> int:
    import logging

    from bot.errors import new_reference
    from bot.log import installed_redactor, redact

    summary = redact(str(exc).strip().partition("\n")[0])
    what = f"{type(exc).__name__}" + (f": {summary}" if summary else "")
    redactor = installed_redactor()
    if redactor is None:
        print(f"gts-bot {' '.join(command.path)}: unexpected error ({what})", file=sys.stderr)
    else:
        # The traceback goes to the (redacting) log; the terminal gets one line and the reference.
        reference = new_reference()
        logging.getLogger(__name__).error("unexpected error (reference %s)", reference, exc_info=exc)
        print(
            f"gts-bot {' '.join(command.path)}: unexpected error ({redactor.redact(what)}); "
            f"see the log, reference {reference}",
            file=sys.stderr,
        )
    return EXIT_UNEXPECTED
