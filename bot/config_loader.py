"""The machinery behind `bot.config`: a YAML file plus prefixed environment variables → frozen dataclasses.

It knows nothing about gts-bot's settings. A `Schema` names the root dataclass (whose dataclass-typed
fields are the sections), the environment prefix, and the cross-field checks; each leaf field carries
its parsing rules as metadata, declared with `setting`:

- ``secret``: hidden from ``repr``, its value never quoted in a problem, and settable as ``<key>_file``;
- ``check``: a validator returning the (possibly normalised) value or raising `Invalid`;
- ``placeholders``: example values that must be replaced;
- ``derived``: computes the default from ``data_dir``.

Precedence, lowest first: field defaults, the YAML file, the environment. `load` collects every problem
before raising `ConfigError`; each problem names its key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from bot.errors import ConfigError

__all__ = ["Invalid", "Key", "Schema", "Validator", "env_name", "known_keys", "load", "sections", "setting"]

T = TypeVar("T")

Key = tuple[str, ...]
EnvValue = tuple[str, str]
"""An environment value and the variable it came from."""


class Invalid(Exception):
    """A value is wrong; the message says how (and never repeats a secret)."""


Validator = Callable[[Any], Any]
"""Returns the (possibly normalised) value or raises `Invalid`."""

CrossChecks = Callable[[Mapping[Key, Any], set[Key]], list[str]]
"""(parsed values, keys already reported) → further problems that involve several settings."""


def setting(
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


@dataclass(frozen=True)
class Schema(Generic[T]):
    root: type[T]
    env_prefix: str
    """Every key `a.b` can be set as `<prefix>A__B`."""
    example_name: str
    """The shipped example file, named in "unedited example value" problems."""
    ignored_env: frozenset[str] = frozenset()
    """Variables with the prefix that are not settings (e.g. the one naming the config file)."""
    cross_checks: CrossChecks | None = None
    default_data_dir: Path = Path("data")


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


def sections(root: type) -> dict[str, type]:
    """The root's dataclass-typed fields, by name."""
    hints = typing.get_type_hints(root)
    return {name: tp for name, tp in hints.items() if isinstance(tp, type) and dataclasses.is_dataclass(tp)}


def _specs(root: type) -> list[_Spec]:
    specs: list[_Spec] = []
    for cls, prefix in [(root, ()), *((c, (n,)) for n, c in sections(root).items())]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                specs.append(_Spec((*prefix, f.name), hints[f.name], f))
    return specs


def known_keys(root: type) -> set[str]:
    """Every dotted key the parser accepts, including the `*_file` forms of secrets."""
    specs = _specs(root)
    return {s.name for s in specs} | {s.name + "_file" for s in specs if s.secret}


def env_name(prefix: str, key: str) -> str:
    return prefix + key.upper().replace(".", "__")


def _describe(value: Any, secret: bool) -> str:
    return type(value).__name__ if secret else repr(value)


def _flatten_file(root: type, data: Any, problems: list[str]) -> dict[Key, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"(top level): the file must be a mapping of settings, got {type(data).__name__}")
        return {}
    names = sections(root)
    out: dict[Key, Any] = {}
    for key, value in data.items():
        if key in names:
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(f"{key}: must be a mapping of settings, got {type(value).__name__}")
                continue
            out.update({(key, str(sub)): v for sub, v in value.items()})
        else:
            out[(str(key),)] = value
    return out


def _flatten_env(
    schema: Schema[Any], environ: Mapping[str, str], known: set[str], problems: list[str]
) -> dict[Key, EnvValue]:
    prefix = schema.env_prefix
    out: dict[Key, EnvValue] = {}
    known_env = {env_name(prefix, k): k for k in known}
    for var, value in sorted(environ.items()):
        if not var.upper().startswith(prefix) or var.upper() in schema.ignored_env:
            continue
        key = known_env.get(var.upper())
        section = var.upper().removeprefix(prefix).lower()
        if key is None and section in sections(schema.root):
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
        raise Invalid("must be true or false")
    if tp is int or tp is float:
        if from_env:
            try:
                raw = tp(raw.strip())
            except ValueError:
                raise Invalid(f"must be {'an integer' if tp is int else 'a number'}") from None
        if isinstance(raw, bool) or not isinstance(raw, int if tp is int else (int, float)):
            raise Invalid(f"must be {'an integer' if tp is int else 'a number'}")
        if not math.isfinite(raw):
            raise Invalid("must be a finite number")
        return tp(raw)
    if tp is str or tp is Path:
        if not isinstance(raw, str):
            raise Invalid("must be a string (quote it in YAML)")
        return tp(raw)
    if typing.get_origin(tp) is tuple:
        if from_env:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise Invalid("must be a list of strings")
        return tuple(raw)
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in the schema, not in the file


def _read_secret_file(name: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise Invalid(f"{name}: must be a path to a file")
    try:
        text = Path(raw).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise Invalid(f"{name}: cannot read {raw!r}: {reason}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise Invalid(f"{name}: the file {raw!r} is empty")
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
        raise Invalid(f"both {spec.name} and {spec.name}_file are set; set only one")
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


def load(schema: Schema[T], path: Path | None, environ: Mapping[str, str]) -> T:
    """Read `path` (None: environment only) and `environ`; raise ConfigError listing every problem."""
    problems: list[str] = []
    data = _read_yaml(path, problems) if path is not None else None
    if problems:
        raise ConfigError(problems)  # without the file's content, any further problem would be a guess
    file_layer = _flatten_file(schema.root, data, problems)
    known = known_keys(schema.root)
    for key in file_layer:
        dotted = ".".join(key)
        if dotted not in known:
            hint = difflib.get_close_matches(dotted, sorted(known | set(sections(schema.root))), n=1)
            problems.append(f"{dotted}: unknown key" + (f"; did you mean {hint[0]}?" if hint else ""))
    env_layer = _flatten_env(schema, environ, known, problems)

    specs = _specs(schema.root)
    values: dict[Key, Any] = {}
    reported: set[Key] = set()
    for spec in specs:
        try:
            problem = _parse_one(schema, spec, _pick(spec, file_layer, env_layer), values)
        except Invalid as exc:
            problem = str(exc)
        if problem:
            problems.append(problem)
            reported.add(spec.key)

    data_dir: Path = values.setdefault(("data_dir",), schema.default_data_dir)
    for spec in specs:
        derive = spec.field.metadata.get("derived")
        if spec.key in values or spec.key in reported:
            continue
        if derive is not None:
            values[spec.key] = derive(data_dir)
        elif spec.field.default is dataclasses.MISSING:
            variable = env_name(schema.env_prefix, spec.name)
            problems.append(f"{spec.name}: required but not set (in the file or as {variable})")
    if schema.cross_checks is not None:
        problems.extend(schema.cross_checks(values, reported))
    if problems:
        raise ConfigError(problems)
    return _build(schema.root, values)


def _parse_one(schema: Schema[Any], spec: _Spec, raw: _Raw | None, values: dict[Key, Any]) -> str | None:
    """Parse and check one setting into `values`; return the problem, if any."""
    if raw is None:
        return None
    try:
        value = _coerce(spec.type, raw.value, raw.from_env)
    except Invalid as exc:
        return f"{raw.label}: {exc}, got {_describe(raw.value, spec.secret)}"
    items = value if isinstance(value, tuple) else (value,)
    if spec.field.metadata.get("placeholders", frozenset()) & set(items):
        shown = "" if spec.secret else f" {value!r}"
        example = schema.example_name
        return f"{raw.label}: unedited example value{shown} from {example}; replace it with your own"
    check = spec.field.metadata.get("check")
    try:
        values[spec.key] = check(value) if check else value
    except Invalid as exc:
        return f"{raw.label}: {exc}"
    return None


def _build(root: type[T], values: dict[Key, Any]) -> T:
    built = {
        name: cls(**{k[1]: v for k, v in values.items() if len(k) == 2 and k[0] == name})
        for name, cls in sections(root).items()
    }
    top = {k[0]: v for k, v in values.items() if len(k) == 1}
    return root(**top, **built)
