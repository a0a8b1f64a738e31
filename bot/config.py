"""Configuration: a YAML file plus `GTS_BOT_*` environment variables → a frozen, typed `Config`.

`config.example.yaml` is the schema of record; the dataclasses below mirror it key for key (a unit test
checks both directions). Each field declares its checks; `bot.config_loader` does the reading.

Precedence, lowest first: field defaults, the YAML file, the environment. Every key `a.b` can be set as
`GTS_BOT_A__B` (lists comma-separated, booleans as true/false/yes/no/1/0/on/off). An empty environment
value counts as unset, except for lists where it means the empty list. Every secret `a.s` can instead be
read from a file named by `a.s_file` (trailing newline stripped); setting both in one source is an error,
and an environment variable for either replaces both file keys.

`load_config` collects every problem before raising `ConfigError`; each problem names its key, and no
problem ever contains a secret's value.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot import config_loader
from bot.config_file import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, config_path
from bot.config_loader import Invalid, Key, Validator, setting
from bot.fediverse.instance import normalize_host_pattern
from bot.fediverse.scopes import is_admin_scope, is_scope_syntax, relay_scope_problem

__all__ = [
    "CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "DEFAULT_DATA_DIR", "ENV_PREFIX",
    "ActionsConfig", "Config", "DatabaseConfig", "EncryptionConfig", "FediverseConfig", "LimitsConfig",
    "LoggingConfig", "MatrixConfig", "ObservabilityConfig", "RelayConfig",
    "config_path", "env_name", "is_user_allowed", "known_keys", "load_config", "own_server_name",
]  # fmt: skip

ENV_PREFIX = "GTS_BOT_"
DEFAULT_DATA_DIR = Path("data")


# -- validators -------------------------------------------------------------------------------------


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"must be an http(s) URL such as https://matrix.org, got {value!r}")
    return value.rstrip("/")


def _matrix_user_id(value: str) -> str:
    if not re.fullmatch(r"@[^:\s]+:[^\s:]+(:\d+)?", value):
        raise Invalid(f"must be a Matrix user id like @bot:example.org, got {value!r}")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def _command_prefix(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise Invalid(f"must be non-empty and contain no whitespace, got {value!r}")
    return value


def _user_globs(values: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if not v.startswith("@")]
    if bad:
        raise Invalid(f"entries must be Matrix id patterns starting with '@' (@*:example.org), got {bad!r}")
    return values


def _one_of(*choices: str, fold: Callable[[str], str] = str.lower) -> Validator:
    def check(value: str) -> str:
        if fold(value) not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return fold(value)

    return check


def _at_least(minimum: float) -> Validator:
    def check(value: float) -> float:
        if value < minimum:
            raise Invalid(f"must be at least {minimum:g}, got {value!r}")
        return value

    return check


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise Invalid(f"must be between 0 and 1, got {value!r}")
    return value


def _between(low: int, high: int) -> Validator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}, got {value!r}")
        return value

    return check


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise Invalid(f"must be a TCP port between 0 and 65535, got {value!r}")
    return value


def _database_url(value: str) -> str:
    # The URL may hold a password: never quote it, only its scheme.
    scheme, sep, _ = value.partition("://")
    if not sep:
        raise Invalid("must be a URL such as sqlite+aiosqlite:///data/gts-bot.sqlite3")
    if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise Invalid(f"scheme {scheme!r} is not supported; use sqlite+aiosqlite or postgresql+asyncpg")
    return value


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise Invalid(f"{str(value)!r} is not a readable file")
    return value


def _scopes(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise Invalid("must name at least one scope, e.g. read")
    bad = [v for v in values if not is_scope_syntax(v)]
    if bad:
        raise Invalid(f"entries must be OAuth scopes like read or read:notifications, got {bad!r}")
    if any(is_admin_scope(v) for v in values):
        raise Invalid("must not ask for admin scopes; the bot only reads notifications")
    if relay_scope_problem(values) is not None:
        raise Invalid("must cover notifications and the account: read, or read:notifications and profile")
    return values


def _hostnames(values: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if not v or "/" in v or any(ch.isspace() for ch in v)]
    if bad:
        raise Invalid(f"entries must be host names or patterns like *.example.org (no scheme), got {bad!r}")
    # Hosts are compared in their ASCII (punycode) form, so entries are normalised the same way.
    try:
        return tuple(normalize_host_pattern(v) for v in values)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _default_db_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'gts-bot.sqlite3').as_posix()}"


# -- the schema -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixConfig:
    homeserver: str = setting(check=_http_url, placeholders=frozenset({"https://matrix.example.org"}))
    user_id: str = setting(check=_matrix_user_id, placeholders=frozenset({"@gts-bot:example.org"}))
    password: str | None = setting(None, secret=True, placeholders=frozenset({"change-me"}))
    access_token: str | None = setting(None, secret=True)
    device_name: str = setting("gts-bot", check=_non_empty)
    command_prefix: str = setting("!gts", check=_command_prefix)
    allowed_users: tuple[str, ...] = setting(
        (), check=_user_globs, placeholders=frozenset({"@*:example.org"})
    )
    trust_policy: str = setting("tofu", check=_one_of("tofu", "all"))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = setting(secret=True, check=_database_url, derived=_default_db_url)


@dataclass(frozen=True)
class EncryptionConfig:
    key_file: Path = field(metadata={"derived": lambda data_dir: data_dir / "keyring.json"})


@dataclass(frozen=True)
class FediverseConfig:
    allow_http: bool = setting(False)
    allow_private_addresses: bool = setting(False)
    default_scopes: tuple[str, ...] = setting(("read",), check=_scopes)
    ca_bundle: Path | None = field(default=None, metadata={"check": _existing_file})
    connect_timeout: float = setting(5.0, check=_at_least(0.1))
    request_timeout: float = setting(15.0, check=_at_least(0.1))
    max_response_bytes: int = setting(1_048_576, check=_at_least(1024))
    user_agent: str = setting("gts-bot/0.1", check=_non_empty)
    app_name: str = setting("gts-bot", check=_non_empty)
    app_website: str = setting("https://github.com/gts-bot/gts-bot", check=_http_url)
    instance_allowlist: tuple[str, ...] = setting((), check=_hostnames)
    instance_denylist: tuple[str, ...] = setting((), check=_hostnames)


@dataclass(frozen=True)
class RelayConfig:
    streaming: bool = setting(True)
    poll_interval: float = setting(300.0, check=_at_least(10))
    poll_jitter: float = setting(0.2, check=_fraction)
    flow_ttl_seconds: float = setting(600.0, check=_at_least(30))


def _reaction_keys(values: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if not v.strip() or len(v) > 16 or any(ch.isspace() for ch in v)]
    if bad:
        raise Invalid(f"entries must be reaction keys such as emoji, got {bad!r}")
    return values


@dataclass(frozen=True)
class ActionsConfig:
    favourite_reactions: tuple[str, ...] = setting(("⭐", "❤️", "👍"), check=_reaction_keys)
    boost_reactions: tuple[str, ...] = setting(("🔁",), check=_reaction_keys)


@dataclass(frozen=True)
class LimitsConfig:
    commands_per_minute: int = setting(20, check=_at_least(1))
    max_accounts_per_user: int = setting(10, check=_at_least(1))
    max_message_bytes: int = setting(24_000, check=_between(4_096, 60_000))


@dataclass(frozen=True)
class ObservabilityConfig:
    enabled: bool = setting(False)
    host: str = setting("127.0.0.1", check=_non_empty)
    port: int = setting(9464, check=_port)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", check=_one_of(*_LEVELS, fold=str.upper))
    format: str = setting("text", check=_one_of("text", "json"))


@dataclass(frozen=True)
class Config:
    data_dir: Path
    matrix: MatrixConfig
    database: DatabaseConfig
    encryption: EncryptionConfig
    fediverse: FediverseConfig
    relay: RelayConfig
    actions: ActionsConfig
    limits: LimitsConfig
    observability: ObservabilityConfig
    logging: LoggingConfig


def is_user_allowed(matrix: MatrixConfig, user_id: str) -> bool:
    """Whether `user_id` may use the bot: it matches one `allowed_users` glob; with none configured, only
    users of the bot's own homeserver may (an operator opens the bot to everyone with `"*"`)."""
    if not matrix.allowed_users:
        return user_id.partition(":")[2] == own_server_name(matrix)
    return any(fnmatch.fnmatchcase(user_id, p) for p in matrix.allowed_users)


def own_server_name(matrix: MatrixConfig) -> str:
    return matrix.user_id.partition(":")[2]


# -- loading ----------------------------------------------------------------------------------------


def _cross_checks(values: Mapping[Key, Any], reported: set[Key]) -> list[str]:
    problems = []
    auth = {("matrix", "password"), ("matrix", "access_token")}
    if not auth & (values.keys() | reported):
        problems.append(
            "matrix.password: required unless matrix.access_token is set; set one of them (or its *_file "
            "form), e.g. as GTS_BOT_MATRIX__PASSWORD_FILE"
        )
    return problems


SCHEMA = config_loader.Schema(
    root=Config,
    env_prefix=ENV_PREFIX,
    example_name="config.example.yaml",
    ignored_env=frozenset({CONFIG_PATH_ENV}),
    cross_checks=_cross_checks,
    default_data_dir=DEFAULT_DATA_DIR,
)


def load_config(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read `path` (None: environment only) and `environ`; raise ConfigError listing every problem."""
    return config_loader.load(SCHEMA, path, environ)


def known_keys() -> set[str]:
    """Every dotted key the parser accepts, including the `*_file` forms of secrets."""
    return config_loader.known_keys(Config)


def env_name(key: str) -> str:
    return config_loader.env_name(ENV_PREFIX, key)


def _sections() -> dict[str, type]:
    return config_loader.sections(Config)
