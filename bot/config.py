"""Configuration: a YAML file plus `GTS_BOT_*` environment variables → a frozen, typed `Config`.

`config.example.yaml` is the schema of record; the dataclasses below mirror it key for key (a unit test
checks both directions).

Precedence, lowest first: field defaults, the YAML file, the environment. Every key `a.b` can be set as
`GTS_BOT_A__B` (lists comma-separated, booleans as true/false/yes/no/1/0/on/off). An empty environment
value counts as unset, except for lists where it means the empty list. Every secret `a.s` can instead be
read from a file named by `a.s_file` (trailing newline stripped); setting both in one source is an error,
and an environment variable for either replaces both file keys.

`load_config` collects every problem before raising `ConfigError`; each problem names its key, and no
problem ever contains a secret's value.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bot.errors import ConfigError

__all__ = [
    "CONFIG_PATH_ENV", "DEFAULT_CONFIG_PATH", "DEFAULT_DATA_DIR", "ENV_PREFIX",
    "Config", "DatabaseConfig", "EncryptionConfig", "FediverseConfig", "LimitsConfig", "LoggingConfig",
    "MatrixConfig", "ObservabilityConfig", "RelayConfig",
    "config_path", "env_name", "is_user_allowed", "known_keys", "load_config",
]  # fmt: skip

ENV_PREFIX = "GTS_BOT_"
CONFIG_PATH_ENV = "GTS_BOT_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")
DEFAULT_DATA_DIR = Path("data")
_EXAMPLE = "config.example.yaml"


class _Invalid(Exception):
    """A value is wrong; the message says how (and never repeats a secret)."""


Validator = Callable[[Any], Any]
"""Returns the (possibly normalised) value or raises `_Invalid`."""


def _setting(
    default: Any = dataclasses.MISSING,
    *,
    secret: bool = False,
    check: Validator | None = None,
    placeholders: frozenset[str] = frozenset(),
    derived: Callable[[Path], Any] | None = None,
) -> Any:
    """A dataclass field with parsing metadata. `derived` computes the default from `data_dir`."""
    meta = {"secret": secret, "check": check, "placeholders": placeholders, "derived": derived}
    return field(default=default, repr=not secret, metadata=meta)


# -- validators -------------------------------------------------------------------------------------


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(f"must be an http(s) URL such as https://matrix.org, got {value!r}")
    return value.rstrip("/")


def _matrix_user_id(value: str) -> str:
    if not re.fullmatch(r"@[^:\s]+:[^\s:]+(:\d+)?", value):
        raise _Invalid(f"must be a Matrix user id like @bot:example.org, got {value!r}")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _command_prefix(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise _Invalid(f"must be non-empty and contain no whitespace, got {value!r}")
    return value


def _user_globs(values: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if not v.startswith("@")]
    if bad:
        raise _Invalid(f"entries must be Matrix id patterns starting with '@' (@*:example.org), got {bad!r}")
    return values


def _one_of(*choices: str, fold: Callable[[str], str] = str.lower) -> Validator:
    def check(value: str) -> str:
        if fold(value) not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return fold(value)

    return check


def _at_least(minimum: float) -> Validator:
    def check(value: float) -> float:
        if value < minimum:
            raise _Invalid(f"must be at least {minimum:g}, got {value!r}")
        return value

    return check


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise _Invalid(f"must be between 0 and 1, got {value!r}")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise _Invalid(f"must be a TCP port between 0 and 65535, got {value!r}")
    return value


def _database_url(value: str) -> str:
    # The URL may hold a password: never quote it, only its scheme.
    scheme, sep, _ = value.partition("://")
    if not sep:
        raise _Invalid("must be a URL such as sqlite+aiosqlite:///data/gts-bot.sqlite3")
    if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise _Invalid(f"scheme {scheme!r} is not supported; use sqlite+aiosqlite or postgresql+asyncpg")
    return value


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise _Invalid(f"{str(value)!r} is not a readable file")
    return value


_SCOPE = re.compile(r"[a-z]+(:[a-z_]+)*")


def _scopes(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise _Invalid("must name at least one scope, e.g. read")
    bad = [v for v in values if not _SCOPE.fullmatch(v)]
    if bad:
        raise _Invalid(f"entries must be OAuth scopes like read or read:notifications, got {bad!r}")
    if any(v == "admin" or v.startswith("admin:") for v in values):
        raise _Invalid("must not ask for admin scopes; the bot only reads notifications")
    granted = set(values)
    if not granted & {"read", "read:notifications"} or not granted & {"read", "read:accounts", "profile"}:
        raise _Invalid("must cover notifications and the account: read, or read:notifications and profile")
    return values


def _hostnames(values: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in values if not v or "/" in v or any(ch.isspace() for ch in v)]
    if bad:
        raise _Invalid(f"entries must be host names or patterns like *.example.org (no scheme), got {bad!r}")
    return tuple(v.lower() for v in values)


def _default_db_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'gts-bot.sqlite3').as_posix()}"


# -- the schema -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixConfig:
    homeserver: str = _setting(check=_http_url, placeholders=frozenset({"https://matrix.example.org"}))
    user_id: str = _setting(check=_matrix_user_id, placeholders=frozenset({"@gts-bot:example.org"}))
    password: str | None = _setting(None, secret=True, placeholders=frozenset({"change-me"}))
    access_token: str | None = _setting(None, secret=True)
    device_name: str = _setting("gts-bot", check=_non_empty)
    command_prefix: str = _setting("!gts", check=_command_prefix)
    allowed_users: tuple[str, ...] = _setting(
        (), check=_user_globs, placeholders=frozenset({"@*:example.org"})
    )
    trust_policy: str = _setting("tofu", check=_one_of("tofu", "all"))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _setting(secret=True, check=_database_url, derived=_default_db_url)


@dataclass(frozen=True)
class EncryptionConfig:
    key_file: Path = field(metadata={"derived": lambda data_dir: data_dir / "keyring.json"})


@dataclass(frozen=True)
class FediverseConfig:
    allow_http: bool = _setting(False)
    allow_private_addresses: bool = _setting(False)
    default_scopes: tuple[str, ...] = _setting(("read",), check=_scopes)
    ca_bundle: Path | None = field(default=None, metadata={"check": _existing_file})
    connect_timeout: float = _setting(5.0, check=_at_least(0.1))
    request_timeout: float = _setting(15.0, check=_at_least(0.1))
    max_response_bytes: int = _setting(1_048_576, check=_at_least(1024))
    user_agent: str = _setting("gts-bot/0.1", check=_non_empty)
    app_name: str = _setting("gts-bot", check=_non_empty)
    app_website: str = _setting("https://github.com/gts-bot/gts-bot", check=_http_url)
    instance_allowlist: tuple[str, ...] = _setting((), check=_hostnames)
    instance_denylist: tuple[str, ...] = _setting((), check=_hostnames)


@dataclass(frozen=True)
class RelayConfig:
    streaming: bool = _setting(True)
    poll_interval: float = _setting(300.0, check=_at_least(10))
    poll_jitter: float = _setting(0.2, check=_fraction)
    flow_ttl_seconds: float = _setting(600.0, check=_at_least(30))


@dataclass(frozen=True)
class LimitsConfig:
    max_pending_flows_per_user: int = _setting(3, check=_at_least(1))
    commands_per_minute: int = _setting(20, check=_at_least(1))
    max_accounts_per_user: int = _setting(10, check=_at_least(1))
    max_message_bytes: int = _setting(4096, check=_at_least(256))


@dataclass(frozen=True)
class ObservabilityConfig:
    enabled: bool = _setting(False)
    host: str = _setting("127.0.0.1", check=_non_empty)
    port: int = _setting(9464, check=_port)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _setting("INFO", check=_one_of(*_LEVELS, fold=str.upper))
    format: str = _setting("text", check=_one_of("text", "json"))


@dataclass(frozen=True)
class Config:
    data_dir: Path
    matrix: MatrixConfig
    database: DatabaseConfig
    encryption: EncryptionConfig
    fediverse: FediverseConfig
    relay: RelayConfig
    limits: LimitsConfig
    observability: ObservabilityConfig
    logging: LoggingConfig


def is_user_allowed(matrix: MatrixConfig, user_id: str) -> bool:
    """Whether `user_id` may use the bot: it matches one `allowed_users` glob, or the list is empty."""
    return not matrix.allowed_users or any(fnmatch.fnmatchcase(user_id, p) for p in matrix.allowed_users)


def config_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file to load: an explicit path or $GTS_BOT_CONFIG (must exist), else ./config.yaml if present."""
    chosen = explicit if explicit is not None else environ.get(CONFIG_PATH_ENV) or None
    if chosen is not None:
        return Path(chosen)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


# -- loading ----------------------------------------------------------------------------------------

Key = tuple[str, ...]
EnvValue = tuple[str, str]
"""An environment value and the variable it came from."""


@dataclass(frozen=True)
class _Spec:
    key: Key
    type: Any
    field: dataclasses.Field[Any]

    @property
    def name(self) -> str:
        return ".".join(self.key)

    @property
    def secret(self) -> bool:
        return bool(self.field.metadata.get("secret"))


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: tp for name, tp in hints.items() if isinstance(tp, type) and dataclasses.is_dataclass(tp)}


def _specs() -> list[_Spec]:
    specs: list[_Spec] = []
    for cls, prefix in [(Config, ()), *((c, (n,)) for n, c in _sections().items())]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                specs.append(_Spec((*prefix, f.name), hints[f.name], f))
    return specs


def known_keys() -> set[str]:
    """Every dotted key the parser accepts, including the `*_file` forms of secrets."""
    return {s.name for s in _specs()} | {s.name + "_file" for s in _specs() if s.secret}


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "__")


def _describe(value: Any, secret: bool) -> str:
    return type(value).__name__ if secret else repr(value)


def _flatten_file(data: Any, problems: list[str]) -> dict[Key, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"(top level): the file must be a mapping of settings, got {type(data).__name__}")
        return {}
    sections = _sections()
    out: dict[Key, Any] = {}
    for key, value in data.items():
        if key in sections:
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(f"{key}: must be a mapping of settings, got {type(value).__name__}")
                continue
            out.update({(key, str(sub)): v for sub, v in value.items()})
        else:
            out[(str(key),)] = value
    return out


def _flatten_env(environ: Mapping[str, str], known: set[str], problems: list[str]) -> dict[Key, EnvValue]:
    out: dict[Key, EnvValue] = {}
    known_env = {env_name(k): k for k in known}
    for var, value in sorted(environ.items()):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() == CONFIG_PATH_ENV:
            continue
        key = known_env.get(var.upper())
        section = var.upper().removeprefix(ENV_PREFIX).lower()
        if key is None and section in _sections():
            problems.append(f"{var}: {section} is a section; set its keys as {var.upper()}__<KEY>")
        elif key is None:
            hint = difflib.get_close_matches(var.upper(), known_env, n=1)
            problems.append(f"{var}: unknown setting" + (f"; did you mean {hint[0]}?" if hint else ""))
        else:
            out[tuple(key.split("."))] = (value, var)
    return out


_BOOLS = dict.fromkeys(("true", "yes", "on", "1"), True) | dict.fromkeys(("false", "no", "off", "0"), False)


def _coerce(tp: Any, raw: Any, from_env: bool) -> Any:
    """Convert one raw value to `tp`; environment strings are parsed, file values must have the type."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner, raw, from_env)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise _Invalid("must be true or false")
    if tp is int or tp is float:
        if from_env:
            try:
                raw = tp(raw.strip())
            except ValueError:
                raise _Invalid(f"must be {'an integer' if tp is int else 'a number'}") from None
        if isinstance(raw, bool) or not isinstance(raw, int if tp is int else (int, float)):
            raise _Invalid(f"must be {'an integer' if tp is int else 'a number'}")
        if not math.isfinite(raw):
            raise _Invalid("must be a finite number")
        return tp(raw)
    if tp is str or tp is Path:
        if not isinstance(raw, str):
            raise _Invalid("must be a string (quote it in YAML)")
        return tp(raw)
    if typing.get_origin(tp) is tuple:
        if from_env:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise _Invalid("must be a list of strings")
        return tuple(raw)
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in the schema, not in the file


def _read_secret_file(name: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise _Invalid(f"{name}: must be a path to a file")
    try:
        text = Path(raw).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise _Invalid(f"{name}: cannot read {raw!r}: {reason}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise _Invalid(f"{name}: the file {raw!r} is empty")
    return text


@dataclass(frozen=True)
class _Raw:
    value: Any
    label: str
    """The key, and where it came from when not from the file, for messages."""
    from_env: bool
    """True when `value` is an environment string still to be parsed."""


def _pick(spec: _Spec, file_layer: dict[Key, Any], env_layer: dict[Key, EnvValue]) -> _Raw | None:
    """The raw value of one setting, or None when it is not set anywhere."""
    keys = [spec.key] + ([(*spec.key[:-1], spec.key[-1] + "_file")] if spec.secret else [])
    # An empty environment value means "unset", except that it is the empty list for a list.
    is_list = typing.get_origin(spec.type) is tuple
    found = {k: env_layer[k] for k in keys if k in env_layer and (env_layer[k][0] or is_list)}
    if found:
        labels = {k: f"{'.'.join(k)} (from {var})" for k, (_, var) in found.items()}
        values = {k: v for k, (v, _) in found.items()}
    else:
        values = {k: file_layer[k] for k in keys if file_layer.get(k) is not None}
        labels = {k: ".".join(k) for k in values}
    if len(values) == 2:
        raise _Invalid(f"both {spec.name} and {spec.name}_file are set; set only one")
    if not values:
        return None
    ((key, raw),) = values.items()
    if key != spec.key:
        return _Raw(_read_secret_file(labels[key], raw), labels[key], from_env=False)
    return _Raw(raw, labels[key], from_env=key in env_layer)


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{path}: config file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read the config file: {getattr(exc, 'strerror', None) or exc}")
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        # The parser's own message can quote the offending line, which may hold a secret: keep it out.
        problems.append(f"{path}: not valid YAML{at}")
        return None


def load_config(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read `path` (None: environment only) and `environ`; raise ConfigError listing every problem."""
    problems: list[str] = []
    data = _read_yaml(path, problems) if path is not None else None
    if problems:
        raise ConfigError(problems)  # without the file's content, any further problem would be a guess
    file_layer = _flatten_file(data, problems)
    known = known_keys()
    for key in file_layer:
        dotted = ".".join(key)
        if dotted not in known:
            hint = difflib.get_close_matches(dotted, sorted(known | set(_sections())), n=1)
            problems.append(f"{dotted}: unknown key" + (f"; did you mean {hint[0]}?" if hint else ""))
    env_layer = _flatten_env(environ, known, problems)

    specs = _specs()
    values: dict[Key, Any] = {}
    reported: set[Key] = set()
    for spec in specs:
        try:
            problem = _parse_one(spec, _pick(spec, file_layer, env_layer), values)
        except _Invalid as exc:
            problem = str(exc)
        if problem:
            problems.append(problem)
            reported.add(spec.key)

    data_dir: Path = values.setdefault(("data_dir",), DEFAULT_DATA_DIR)
    for spec in specs:
        derive = spec.field.metadata.get("derived")
        if spec.key in values or spec.key in reported:
            continue
        if derive is not None:
            values[spec.key] = derive(data_dir)
        elif spec.field.default is dataclasses.MISSING:
            problems.append(f"{spec.name}: required but not set (in the file or as {env_name(spec.name)})")
    problems.extend(_cross_checks(values, reported))
    if problems:
        raise ConfigError(problems)
    return _build(values)


def _parse_one(spec: _Spec, raw: _Raw | None, values: dict[Key, Any]) -> str | None:
    """Parse and check one setting into `values`; return the problem, if any."""
    if raw is None:
        return None
    try:
        value = _coerce(spec.type, raw.value, raw.from_env)
    except _Invalid as exc:
        return f"{raw.label}: {exc}, got {_describe(raw.value, spec.secret)}"
    items = value if isinstance(value, tuple) else (value,)
    if spec.field.metadata.get("placeholders", frozenset()) & set(items):
        shown = "" if spec.secret else f" {value!r}"
        return f"{raw.label}: unedited example value{shown} from {_EXAMPLE}; replace it with your own"
    check = spec.field.metadata.get("check")
    try:
        values[spec.key] = check(value) if check else value
    except _Invalid as exc:
        return f"{raw.label}: {exc}"
    return None


def _cross_checks(values: dict[Key, Any], reported: set[Key]) -> list[str]:
    problems = []
    auth = {("matrix", "password"), ("matrix", "access_token")}
    if not auth & (values.keys() | reported):
        problems.append(
            "matrix.password: required unless matrix.access_token is set; set one of them (or its *_file "
            "form), e.g. as GTS_BOT_MATRIX__PASSWORD_FILE"
        )
    scopes = values.get(("fediverse", "default_scopes"), ())
    if values.get(("relay", "streaming"), True) and scopes and "read" not in scopes:
        problems.append(
            "fediverse.default_scopes: relay.streaming needs the top-level 'read' scope; add it or set "
            "relay.streaming to false"
        )
    return problems


def _build(values: dict[Key, Any]) -> Config:
    sections = {
        name: cls(**{k[1]: v for k, v in values.items() if len(k) == 2 and k[0] == name})
        for name, cls in _sections().items()
    }
    top = {k[0]: v for k, v in values.items() if len(k) == 1}
    return Config(**top, **sections)
