"""The `gts-bot` command line: a table of subcommands, their help, and the process exit codes.

Exit codes: 0 success; 1 unexpected error; 2 bad command line (also: `accounts revoke` names no
account); 65 an operator command refused the data (`migrate-db` into a non-empty database); a
`StartupError`'s own `exit_code` (78 configuration, 77 key file, 72 key file readable by others, 75
database newer than this code);
130 interrupted. The operator commands' handlers live in `bot.admin.commands`.

To add a command, write a handler `(Invocation) -> int` and add a `Subcommand` to `SUBCOMMANDS`; a
command under a new group (e.g. `accounts list`) also needs the group's help in `GROUPS`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.admin import commands as admin
from bot.config import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, Config, config_path, load_config
from bot.errors import StartupError, new_reference
from bot.log import installed_redactor, redact, setup_logging

__all__ = ["GROUPS", "SUBCOMMANDS", "Invocation", "Subcommand", "build_parser", "main"]

log = logging.getLogger(__name__)

EXIT_OK = 0
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
        return load_config(self.config_file, self.environ)


Handler = Callable[[Invocation], int]


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


# -- handlers ---------------------------------------------------------------------------------------


def _start_logging(config: Config) -> None:
    redactor = setup_logging(config.logging)
    for secret in (config.matrix.password, config.matrix.access_token, config.database.url):
        redactor.add_secret(secret)


def _run(inv: Invocation) -> int:
    config = inv.load_config()
    _start_logging(config)
    from bot.app import run

    return run(config)


def _migrate(inv: Invocation) -> int:
    config = inv.load_config()
    _start_logging(config)
    from bot.store.migrate import upgrade_url

    head = asyncio.run(upgrade_url(config.database.url))
    print(f"database {_describe_database(config.database.url)} is at revision {head}")
    return EXIT_OK


def _check_config(inv: Invocation) -> int:
    # A ConfigError propagates to main, which prints every problem and exits 78.
    config = inv.load_config()
    print(f"configuration OK ({inv.config_file or 'environment only'})")
    for line in describe_config(config):
        print(f"  {line}")
    return EXIT_OK


def _add_key_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="PATH",
        help="Write the key file here instead of to encryption.key_file (no configuration is read then).",
    )


def _keys_generate(inv: Invocation) -> int:
    path: Path = inv.args.key_file or inv.load_config().encryption.key_file
    from bot.store.crypto import KeyRing

    KeyRing.generate_file(path)
    print(f"wrote a new key file to {path} (readable only by its owner)")
    print(
        "Back it up now, somewhere other than the database backups: without it the stored tokens "
        "cannot be decrypted, and anyone who has both can read them."
    )
    return EXIT_OK


def _keys_rotate(inv: Invocation) -> int:
    config = inv.load_config()
    _start_logging(config)
    from bot.store.keys import rotate_keys

    count = asyncio.run(rotate_keys(config))
    print(f"re-encrypted {count} stored secrets with a new key in {config.encryption.key_file}")
    print(
        "The old keys remain in the key file, so older database backups stay readable; remove them "
        "by hand once no backup needs them."
    )
    return EXIT_OK


def _demo(inv: Invocation) -> int:
    from bot.demo import run_demo

    return run_demo(keep=inv.args.keep)


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from bot.demo import add_arguments

    add_arguments(parser)


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
        _run,
    ),
    Subcommand(
        ("migrate",),
        "Upgrade the database schema to this version and exit.",
        "Upgrade the database schema to the newest revision this version knows, then exit. "
        "Refuses to touch a database written by a newer gts-bot.",
        _migrate,
    ),
    Subcommand(
        ("check-config",),
        "Check the configuration and list every problem.",
        "Load the configuration file and GTS_BOT_* environment variables, list every problem at once "
        "(exit code 78), or print a short summary without secrets when all is well.",
        _check_config,
    ),
    Subcommand(
        ("keys", "generate"),
        "Create a new key file; never overwrites one.",
        "Create a new key file (mode 0600) at encryption.key_file or --key-file. It refuses to overwrite "
        "an existing file, since that would make every stored token unreadable.",
        _keys_generate,
        _add_key_file_argument,
    ),
    Subcommand(
        ("keys", "rotate"),
        "Add a new key and re-encrypt every stored secret with it.",
        "Add a new current key to the key file and re-encrypt every stored secret with it. The old "
        "keys stay in the file, so older backups remain readable.",
        _keys_rotate,
    ),
    Subcommand(
        ("keys", "retire"),
        "Remove the old keys once no stored secret needs them.",
        "Remove every key but the current one from the key file, after checking that every stored secret "
        "decrypts with the current key alone (run `keys rotate` first). Database backups from before the "
        "rotation then need a copy of the previous key file. Run it with the bot stopped.",
        admin.keys_retire,
    ),
    Subcommand(
        ("accounts", "list"),
        "List connected accounts, without any secret.",
        "List the connected fediverse accounts (all, or one user's with --user): Matrix user, account, "
        "instance, state, notification types, relay cursor, created and updated times. Tokens are never "
        "read.",
        admin.accounts_list,
        admin.accounts_list_arguments,
    ),
    Subcommand(
        ("accounts", "revoke"),
        "Revoke a user's accounts on their instances and delete them here.",
        "Revoke a user's connected accounts on their instances (best effort) and delete their tokens and "
        "cursors here, as the user's own revoke command does. Run it with the bot stopped: a running bot "
        "keeps the token it loaded until the instance rejects it or the bot restarts.",
        admin.accounts_revoke,
        admin.accounts_revoke_arguments,
    ),
    Subcommand(
        ("migrate-db",),
        "Copy all data into another, empty database (e.g. SQLite to PostgreSQL).",
        "Copy every row from the --from database into the empty --to database (e.g. SQLite to "
        "PostgreSQL), secrets still encrypted, in one transaction, then check the row counts. The target "
        "is migrated first; a target that already holds data is refused (exit code 65). Stop the bot "
        "first.",
        admin.migrate_db,
        admin.migrate_db_arguments,
    ),
    Subcommand(
        ("demo",),
        "Try the bot without any account (needs a checkout with the test extra).",
        "Try the bot without any account: starts a throwaway Synapse and a fake GoToSocial on loopback "
        "and plays a user through connect, notifications and revoke (needs the test extra: "
        "pip install -e '.[test]').",
        _demo,
        _add_demo_arguments,
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


# -- presentation -----------------------------------------------------------------------------------


def _describe_database(url: str) -> str:
    if url.startswith("sqlite"):
        return f"SQLite {url.partition(':///')[2]}"
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def describe_config(config: Config) -> list[str]:
    """A short summary of `config` for people: never a secret."""
    m, f, r, o = config.matrix, config.fediverse, config.relay, config.observability
    login = "access token" if m.access_token else "password"
    key_state = "exists" if config.encryption.key_file.exists() else "missing: run `gts-bot keys generate`"
    return [
        f"matrix: {m.user_id} on {m.homeserver} ({login} login), commands start with {m.command_prefix!r}",
        "allowed users: " + (", ".join(m.allowed_users) or "everyone"),
        f"data directory: {config.data_dir}",
        f"database: {_describe_database(config.database.url)}",
        f"key file: {config.encryption.key_file} ({key_state})",
        f"fediverse: {'http allowed' if f.allow_http else 'https only'}, "
        f"{'private addresses allowed' if f.allow_private_addresses else 'public addresses only'}, "
        f"scopes {' '.join(f.default_scopes)}",
        f"relay: {'streaming, ' if r.streaming else ''}polling every {r.poll_interval:g}s",
        "metrics: " + (f"http://{o.host}:{o.port}/metrics" if o.enabled else "off"),
        f"logging: {config.logging.level} as {config.logging.format}",
    ]


# -- entry point ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run one command line; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
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
    summary = redact(str(exc).strip().partition("\n")[0])
    what = f"{type(exc).__name__}" + (f": {summary}" if summary else "")
    redactor = installed_redactor()
    if redactor is None:
        print(f"gts-bot {' '.join(command.path)}: unexpected error ({what})", file=sys.stderr)
    else:
        # The traceback goes to the (redacting) log; the terminal gets one line and the reference.
        reference = new_reference()
        log.error("unexpected error (reference %s)", reference, exc_info=exc)
        print(
            f"gts-bot {' '.join(command.path)}: unexpected error ({redactor.redact(what)}); "
            f"see the log, reference {reference}",
            file=sys.stderr,
        )
    return EXIT_UNEXPECTED
