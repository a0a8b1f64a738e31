"""Which configuration file to read: the one fact about configuration the command line needs up front.

Apart from `bot.config` (which re-exports these names) so that `gts-bot --help` need not import the whole
configuration schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "config_path"]

CONFIG_PATH_ENV = "GTS_BOT_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")


def config_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file to load: an explicit path or $GTS_BOT_CONFIG (must exist), else ./config.yaml if present."""
    chosen = explicit if explicit is not None else environ.get(CONFIG_PATH_ENV) or None
    if chosen is not None:
        return Path(chosen)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
