"""Logging setup (text or JSON lines) and the filter that keeps secrets out of every log line.

`setup_logging` installs one handler on the root logger with a `RedactingFilter`. The filter renders
each record's message, its traceback and its extra fields, masks anything that looks like a token,
code, client secret or key, and masks exact secret values registered at run time: the operator's with
`add_secret`, and tokens and client secrets instances return with `add_remote_secret` (token-shaped
values only, bounded in number, dropped with `forget_secret`).
Called again, `setup_logging` replaces its own handler and keeps the secrets already registered.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.config import LoggingConfig

__all__ = ["REDACTED", "RedactingFilter", "installed_redactor", "redact", "setup_logging"]

REDACTED = "[REDACTED]"

NOISY_LOGGERS = (
    "nio",
    "httpx",
    "httpcore",
    "aiosqlite",
    "websockets",
    "peewee",
    "aiohttp.access",
    "alembic.runtime.plugins",
    "alembic.runtime.migration",
)
"""Third-party loggers held at WARNING unless the level is DEBUG."""

# Names whose values are masked in key=value, JSON and repr text (not secrets themselves).
_SECRET_NAMES = "|".join(
    ("access_token", "refresh_token", "client_secret", "code", "token", "password", "secret", "pickle_key")
)
_TOKEN_CHARS = "[A-Za-z0-9._~+/=-]"  # noqa: S105 - a character class

_Sub = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _long_run(match: re.Match[str]) -> str:
    # A long run of base64/base32-ish characters is a key or token when it mixes character classes.
    text = match.group(0)
    classes = sum(bool(re.search(p, text)) for p in (r"[A-Z]", r"[a-z]", r"[0-9]"))
    uppercase_code = bool(re.fullmatch(r"[A-Z0-9_-]+", text)) and sum(c.isalnum() for c in text) >= 32
    return REDACTED if classes == 3 or uppercase_code else text


_PATTERNS: tuple[_Sub, ...] = (
    # Authorization headers, also in reprs of header lists.
    (re.compile(r"\b(Bearer|Basic)(\s+)" + _TOKEN_CHARS + "+", re.IGNORECASE), rf"\1\2{REDACTED}"),
    # JSON / Python-repr pairs: "access_token": "…", 'code': '…'.
    (
        re.compile(rf"""(["'])({_SECRET_NAMES})\1(\s*[:=]\s*)(["'])((?:\\.|(?!\4).)*)\4""", re.IGNORECASE),
        rf"\1\2\1\3\4{REDACTED}\4",
    ),
    # Query strings, form bodies and key=value text: access_token=…, code=…, password=….
    (re.compile(rf"(?<![A-Za-z0-9_])({_SECRET_NAMES})=([^&\s\"'<>,;)]+)", re.IGNORECASE), rf"\1={REDACTED}"),
    # Matrix access and refresh tokens (Synapse syt_/syr_, MAS mat_/mar_, device/app tokens).
    (re.compile(r"\b(?:sy[tdr]|ma[tr]|mct)_[A-Za-z0-9_-]{8,}"), REDACTED),
    # UUIDs: Mastodon/GoToSocial client secrets.
    (re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b", re.IGNORECASE), REDACTED),
    # Padded standard base64 (keys, ciphertexts); may contain "/" so only when it ends in "=".
    (re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={1,2}"), REDACTED),
    # GoToSocial codes and tokens (48 chars, uppercase base64url), other base64url keys, long mixed tokens.
    # Not Matrix room and event ids (`!…`, `$…`): they are public and the log needs them.
    (re.compile(r"(?<![A-Za-z0-9+_!$-])[A-Za-z0-9+_-]{40,}=*"), _long_run),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with registered `secrets` (longest first) and anything token-like replaced by REDACTED."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


MIN_REMOTE_SECRET_LENGTH = 32
"""A token or client secret an instance returned is registered only when it looks like one: at least this
long (GoToSocial tokens have 48 characters, Mastodon's 43, client secrets 36-43), token characters only,
mixing letters and digits. Anything else (a word, a Matrix id) would let an instance erase text from logs."""
MAX_REMOTE_SECRETS = 10_000
"""Registered remote secrets; past this the oldest is dropped (the token patterns still mask it)."""

_REMOTE_SECRET = re.compile(rf"{_TOKEN_CHARS}{{{MIN_REMOTE_SECRET_LENGTH},2048}}")
_TOKEN_RUN = re.compile(rf"{_TOKEN_CHARS}{{{MIN_REMOTE_SECRET_LENGTH},}}")
_PREFIX = 16  # remote secrets are found by their first characters: cost does not grow with their number


def is_token_shaped(value: str) -> bool:
    """True for a value that can be a real token or client secret (see MIN_REMOTE_SECRET_LENGTH)."""
    if not _REMOTE_SECRET.fullmatch(value):
        return False
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


class _SecretIndex:
    """Remote secrets by prefix. Writers hold a lock; readers (logging threads) only `get` a key, and
    each group is an immutable frozenset swapped in whole, so a reader never sees one being changed."""

    def __init__(self, secrets: Iterable[str] = (), *, limit: int = MAX_REMOTE_SECRETS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._order: dict[str, None] = {}  # insertion order: the oldest is dropped first
        self._by_prefix: dict[str, frozenset[str]] = {}
        self.lookups = 0  # prefix look-ups made by the last `sub` (its cost; see the tests)
        for secret in secrets:
            self.add(secret)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._order))

    def add(self, secret: str) -> None:
        with self._lock:
            if secret in self._order:
                return
            self._order[secret] = None
            self._regroup(secret, add=True)
            while len(self._order) > self._limit:
                oldest = next(iter(self._order))
                del self._order[oldest]
                self._regroup(oldest, add=False)

    def remove(self, secret: str) -> None:
        with self._lock:
            if secret in self._order:
                del self._order[secret]
                self._regroup(secret, add=False)

    def _regroup(self, secret: str, *, add: bool) -> None:
        prefix = secret[:_PREFIX]
        group = self._by_prefix.get(prefix, frozenset())
        group = group | {secret} if add else group - {secret}
        if group:
            self._by_prefix[prefix] = group
        else:
            self._by_prefix.pop(prefix, None)

    def sub(self, text: str) -> str:
        by_prefix = self._by_prefix
        self.lookups = 0
        if not by_prefix:
            return text

        def mask(match: re.Match[str]) -> str:
            run = match.group(0)
            out: list[str] = []
            start = position = 0
            while position <= len(run) - MIN_REMOTE_SECRET_LENGTH:
                self.lookups += 1
                candidates = by_prefix.get(run[position : position + _PREFIX])
                hit = max((c for c in candidates or () if run.startswith(c, position)), key=len, default="")
                if hit:
                    out += (run[start:position], REDACTED)
                    position = start = position + len(hit)
                else:
                    position += 1
            out.append(run[start:])
            return "".join(out)

        return _TOKEN_RUN.sub(mask, text)


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record so nothing secret reaches any formatter.

    Two kinds of exact values are masked besides the token patterns: `add_secret` for the operator's own
    (passwords, keys, database URLs: any value of 4 characters or more), and `add_remote_secret` for
    tokens and client secrets instances return, which only count when token-shaped, are bounded in number
    and are dropped again with `forget_secret` when their account is revoked or forgotten.
    """

    MIN_SECRET_LENGTH = 4
    """Shorter values are ignored: masking them would mangle ordinary text."""

    def __init__(self, secrets: Iterable[str] = (), remote_secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        for secret in secrets:
            self.add_secret(secret)
        self._remote = _SecretIndex(s for s in remote_secrets if is_token_shaped(s))

    def __repr__(self) -> str:
        return f"RedactingFilter(<{len(self._secrets)} secrets, {len(self._remote)} remote>)"

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    @property
    def remote_secrets(self) -> frozenset[str]:
        return frozenset(self._remote)

    def add_secret(self, value: str | None) -> None:
        """Mask this exact value from now on (a password or key the operator configured)."""
        if value and len(value) >= self.MIN_SECRET_LENGTH:
            # Swap in a new frozenset, so logging threads never see one being changed.
            self._secrets = self._secrets | {value}

    def add_remote_secret(self, value: str | None) -> None:
        """Mask a token or client secret an instance returned, when it is token-shaped (else ignored)."""
        if value and is_token_shaped(value):
            self._remote.add(value)

    def forget_secret(self, value: str | None) -> None:
        """Stop masking a remote secret (its account was revoked or forgotten)."""
        if value:
            self._remote.remove(value)

    def redact(self, text: str) -> str:
        return self._remote.sub(redact(text, self._secrets))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it; our text is masked all the same
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            # Formatters print exc_text when set; without exc_info no later handler renders it afresh.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in _extras(record).items():
            if value is None or isinstance(value, bool | int | float):
                continue
            text = value if isinstance(value, str) else repr(value)
            masked = self.redact(text)
            if masked != text:
                setattr(record, name, masked)
        return True


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`2025-01-01 12:00:00,000 INFO    bot.relay: message key=value`, then any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = _extras(record)
        return line + "".join(f" {k}={v}" for k, v in extras.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, exception, stack."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class _BotHandler(logging.StreamHandler[TextIO]):
    """Marks the handler `setup_logging` owns, so a second call replaces it and no other."""


def installed_redactor() -> RedactingFilter | None:
    """The filter of the handler `setup_logging` installed on the root logger, if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _BotHandler):
            for flt in handler.filters:
                if isinstance(flt, RedactingFilter):
                    return flt
    return None


def setup_logging(
    config: LoggingConfig, *, stream: TextIO | None = None, redactor: RedactingFilter | None = None
) -> RedactingFilter:
    """Send all logging to `stream` (default stderr) as text or JSON lines, every record redacted.

    Returns the filter, so the caller can `add_secret` values it learns later.
    """
    root = logging.getLogger()
    previous = installed_redactor()
    if redactor is None:
        redactor = RedactingFilter(
            previous.secrets if previous else (), previous.remote_secrets if previous else ()
        )
    for handler in [h for h in root.handlers if isinstance(h, _BotHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _BotHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root.addHandler(handler)
    level = logging.getLevelName(config.level)
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)
    return redactor
