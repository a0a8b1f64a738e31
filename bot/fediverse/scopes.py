"""OAuth scopes, in one place: the vocabulary, how one scope covers another, what the bot needs, and what
each server needs for streaming. Pure; tested with plain values.

- Covering follows GoToSocial's `Scope.Permits` (reference §5), which Mastodon's Doorkeeper matches for
  the scopes the bot uses: a scope covers itself, and a top-level scope covers `<scope>:…`.
- To relay, a token must read notifications (`read:notifications`, or `read`) and the account
  (`profile`, `read:accounts`, or `read`).
- Streaming the notifications differs per server (mastodon-family.md, "Scopes"): GoToSocial accepts only
  the top-level `read`; Mastodon (`streaming/index.js`, `checkScopes`) and Akkoma also accept
  `read:notifications`. A server the bot does not know is assumed to want `read`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "KNOWN_SCOPES",
    "TOP_LEVEL_SCOPES",
    "is_admin_scope",
    "is_scope_syntax",
    "normalize_scopes",
    "parse_scopes",
    "permits",
    "relay_scope_problem",
    "scope_string",
    "scopes_cover",
    "stream_scopes",
    "streams_with",
]

# GoToSocial's known top-level scopes (reference §5); only these cover `<scope>:...`.
TOP_LEVEL_SCOPES: Final = frozenset(
    {"profile", "push", "read", "write", "admin", "admin:read", "admin:write"}
)

_READ_SCOPES = (
    "accounts",
    "applications",
    "blocks",
    "bookmarks",
    "custom_emojis",
    "favourites",
    "filters",
    "follows",
    "lists",
    "mutes",
    "notifications",
    "search",
    "statuses",
)
_WRITE_SCOPES = (
    "accounts",
    "applications",
    "blocks",
    "bookmarks",
    "conversations",
    "favourites",
    "filters",
    "follows",
    "lists",
    "media",
    "mutes",
    "notifications",
    "reports",
    "statuses",
)
KNOWN_SCOPES: Final = frozenset(
    ["profile", "push", "read", "write", "follow"]
    + [f"read:{s}" for s in _READ_SCOPES]
    + [f"write:{s}" for s in _WRITE_SCOPES]
)

_STREAM_SCOPES: Final = {
    "gotosocial": frozenset({"read"}),
    "mastodon": frozenset({"read", "read:notifications"}),
    "akkoma": frozenset({"read", "read:notifications"}),
    "pleroma": frozenset({"read", "read:notifications"}),
}
_SYNTAX = re.compile(r"[a-z]+(:[a-z_]+)*")


def parse_scopes(text: str) -> tuple[str, ...]:
    """A space-separated scope string → its scopes, in order, without empties or duplicates."""
    seen: dict[str, None] = {}
    for scope in text.split():
        seen.setdefault(scope, None)
    return tuple(seen)


def normalize_scopes(scopes: Iterable[str] | str) -> tuple[str, ...]:
    """A canonical form for caching an app per scope set: split, deduplicated, sorted."""
    items = parse_scopes(scopes) if isinstance(scopes, str) else parse_scopes(" ".join(scopes))
    return tuple(sorted(items))


def scope_string(scopes: Iterable[str] | str) -> str:
    """The canonical form as one string (as stored): "write read read" → "read write"."""
    return " ".join(normalize_scopes(scopes))


def is_scope_syntax(value: str) -> bool:
    return _SYNTAX.fullmatch(value) is not None


def is_admin_scope(value: str) -> bool:
    return value == "admin" or value.startswith("admin:")


def permits(has: str, wanted: str) -> bool:
    """GoToSocial's `Scope.Permits`: equal, or `has` is a known top-level scope and `wanted` is under it."""
    return has == wanted or (has in TOP_LEVEL_SCOPES and wanted.startswith(has + ":"))


def scopes_cover(granted: Iterable[str] | str, requested: Iterable[str] | str) -> bool:
    """True if every requested scope is permitted by at least one granted scope."""
    has = parse_scopes(granted) if isinstance(granted, str) else tuple(granted)
    wanted = parse_scopes(requested) if isinstance(requested, str) else tuple(requested)
    return all(any(permits(h, w) for h in has) for w in wanted)


def relay_scope_problem(scopes: Iterable[str] | str) -> str | None:
    """Why these scopes cannot relay (user-facing words), or None when they can."""
    has = parse_scopes(scopes) if isinstance(scopes, str) else tuple(scopes)
    if not scopes_cover(has, ["read:notifications"]):
        return "they would not let the bot read your notifications"
    if not any(permits(s, "read:accounts") or s == "profile" for s in has):
        return "they would not let the bot see which account it is connected to"
    return None


def stream_scopes(software: str | None) -> frozenset[str]:
    """The scopes of which a token needs one to stream notifications on this server."""
    return _STREAM_SCOPES.get((software or "").lower(), _STREAM_SCOPES["gotosocial"])


def streams_with(granted: Iterable[str] | str, software: str | None) -> bool:
    """Whether a token with these scopes may open the notification stream on this server."""
    has = parse_scopes(granted) if isinstance(granted, str) else tuple(granted)
    return bool(stream_scopes(software).intersection(has))
