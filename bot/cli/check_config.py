"""`gts-bot check-config`: load the configuration and summarise it, without any secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.cli.common import EXIT_OK, describe_database

if TYPE_CHECKING:
    from bot.cli import Invocation
    from bot.config import Config

__all__ = ["check_config", "describe_config"]


def check_config(invocation: Invocation) -> int:
    # A ConfigError propagates to main, which prints every problem and exits 78.
    config = invocation.load_config()
    print(f"configuration OK ({invocation.config_file or 'environment only'})")
    for line in describe_config(config):
        print(f"  {line}")
    return EXIT_OK


def describe_config(config: Config) -> list[str]:
    """A short summary of `config` for people: never a secret."""
    from bot.config import own_server_name  # already imported by loading the config

    m, f, r, o = config.matrix, config.fediverse, config.relay, config.observability
    login = "access token" if m.access_token else "password"
    key_state = "exists" if config.encryption.key_file.exists() else "missing: run `gts-bot keys generate`"
    return [
        f"matrix: {m.user_id} on {m.homeserver} ({login} login), commands start with {m.command_prefix!r}",
        "allowed users: "
        + (", ".join(m.allowed_users) or f"users of {own_server_name(m)} only (the bot's own homeserver)"),
        f"data directory: {config.data_dir}",
        f"database: {describe_database(config.database.url)}",
        f"key file: {config.encryption.key_file} ({key_state})",
        f"fediverse: {'http allowed' if f.allow_http else 'https only'}, "
        f"{'private addresses allowed' if f.allow_private_addresses else 'public addresses only'}, "
        f"scopes {' '.join(f.default_scopes)}",
        f"relay: {'streaming, ' if r.streaming else ''}polling every {r.poll_interval:g}s",
        "metrics: " + (f"http://{o.host}:{o.port}/metrics" if o.enabled else "off"),
        f"logging: {config.logging.level} as {config.logging.format}",
    ]
