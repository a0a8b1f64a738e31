"""Pure helpers of the fake GoToSocial: ids, secrets, time formats, scopes, Go-style JSON.

Everything here mirrors a documented behaviour of GoToSocial v0.20 (see
shared/reference/gotosocial-client-api.md); nothing does I/O.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from bot.fediverse.notification_types import GOTOSOCIAL as GOTOSOCIAL_SERVER
from bot.fediverse.notification_types import NOTIFICATION_TYPES as ALL_TYPES

OOB_URI = "urn:ietf:wg:oauth:2.0:oob"

HELPFUL_ADVICE = (
    "If you arrived at this error during a sign in/oauth flow, please try clearing your session cookies and "
    "signing in again; if problems persist, make sure you're using the correct credentials"
)
HELPFUL_ADVICE_GRANT = (
    "If you arrived at this error during a sign in/oauth flow, your client is trying to use an unsupported "
    "OAuth grant type. Supported grant types are: authorization_code, client_credentials; please reach out "
    "to developer of your client"
)

TOP_LEVEL_SCOPES = frozenset({"profile", "push", "read", "write", "admin", "admin:read", "admin:write"})

# The bot's one list of notification types (the fake may import bot code; never the reverse).
NOTIFICATION_TYPES = tuple(t.name for t in ALL_TYPES if GOTOSOCIAL_SERVER in t.servers)  # §7.4
# Types whose notification carries a status (§7.4).
STATUS_TYPES = frozenset(t.name for t in ALL_TYPES if t.status != "none")
# For these the status belongs to the notified user (their post was faved/boosted).
OWN_STATUS_TYPES = frozenset(t.name for t in ALL_TYPES if t.about_your_post)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def status_text(code: int) -> str:
    """Go's http.StatusText for the codes the fake uses."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def safe_text(code: int, *helps: str) -> str:
    """GoToSocial's "safe" error text: ``<StatusText>[: help...]``."""
    return ": ".join([status_text(code), *helps])


def _crockford(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


class UlidFactory:
    """Monotonic ULIDs: 48-bit ms time + 80 random bits, strictly increasing within a millisecond."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_rand = 0

    def new(self, now_ms: int | None = None) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        if ms <= self._last_ms:
            ms = self._last_ms
            rand = self._last_rand + 1
            if rand >= 1 << 80:  # overflow within one ms: borrow the next millisecond
                ms += 1
                rand = secrets.randbits(79)
        else:
            rand = secrets.randbits(79)  # leave headroom for increments within the ms
        self._last_ms, self._last_rand = ms, rand
        return _crockford((ms << 80) | rand)


class SnowflakeFactory:
    """Mastodon-style numeric string ids, increasing; optionally a plain counter (to cross digit counts)."""

    def __init__(self, start: int | None = None) -> None:
        self._counter = start
        self._last = 0

    def new(self) -> str:
        if self._counter is not None:
            value = self._counter
            self._counter += 1
            return str(value)
        value = max(int(time.time() * 1000) << 16, self._last + 1)
        self._last = value
        return str(value)


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in ASCII order


def flake_id(ulid: str) -> str:
    """Akkoma-style id: the same 128 bits in fixed-width base62, so ids still sort as strings."""
    value = 0
    for ch in ulid:
        value = value * 32 + _CROCKFORD.index(ch)
    out = []
    for _ in range(22):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out))


def random_ulid() -> str:
    """A ULID whose time part is random too (GoToSocial's client_id)."""
    return _crockford(secrets.randbits(128))


def oauth_secret() -> str:
    """Code / access token format: uppercased unpadded base64url of a UUID string (48 chars)."""
    raw = base64.urlsafe_b64encode(str(uuid.uuid4()).encode()).decode().rstrip("=")
    return raw.upper()


def authorization_code(length: int) -> str:
    """A code in the server's own format: GoToSocial's 48-character `oauth_secret`, or Doorkeeper's and
    Akkoma's unpadded base64url of 32 random bytes (43 characters)."""
    if length == 48:
        return oauth_secret()
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")[:length]


def vapid_key() -> str:
    return base64.urlsafe_b64encode(b"\x04" + os.urandom(64)).decode().rstrip("=")


def iso_ms(ts: float) -> str:
    """``2006-01-02T15:04:05.000Z``."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def iso_seconds(ts: float) -> str:
    """Whole-second precision, as on SQLite."""
    return iso_ms(float(int(ts)))


def permits(has: str, wanted: str) -> bool:
    """GoToSocial's ``Scope.Permits``."""
    if has == wanted:
        return True
    return has in TOP_LEVEL_SCOPES and wanted.startswith(has + ":")


def token_permits(token_scope: str, *wanted: str) -> bool:
    """True when one scope of the token covers one of the wanted scopes."""
    have = token_scope.split(" ")
    return any(permits(h, w) for h in have for w in wanted)


def scopes_covered(requested: str, allowed: list[str]) -> str | None:
    """Return the first requested scope not covered by any allowed scope, or None if all are covered."""
    for want in requested.split(" "):
        if not any(permits(a, want) for a in allowed):
            return want
    return None


def go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def parse_accept(values: list[str]) -> list[str]:
    out: list[str] = []
    for header in values:
        for part in header.split(","):
            i = part.find(";")
            if i > 0:
                part = part[:i]
            part = part.strip()
            if part:
                out.append(part)
    return out


def negotiate(accept_values: list[str], offers: list[str]) -> str | None:
    """gin's NegotiateFormat with GoToSocial's multi-header fix. No Accept → first offer."""
    accepted = parse_accept(accept_values)
    if not accepted:
        return offers[0]
    for acc in accepted:
        for offer in offers:
            i = 0
            while i < len(acc):
                if acc[i] == "*" or (i < len(offer) and offer[i] == "*"):
                    return offer
                if i >= len(offer) or acc[i] != offer[i]:
                    break
                i += 1
            if i == len(acc):
                return offer
    return None
