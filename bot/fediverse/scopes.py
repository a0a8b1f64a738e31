"""OAuth scopes, in one place: the vocabulary, how one scope covers another, what the bot needs, and what
each server needs for streaming. Pure; tested with plain values.

- Covering follows GoToSocial's `Scope.Permits` (reference §5), which Mastodon's Doorkeeper matches for
  the scopes the bot uses: a scope covers itself, and a top-level scope covers `<scope>:…`.
- To relay, a token must read notifications (`read:notifications`, or `read`) and the account
  (`profile`, `read:accounts`, or `read`).
- Streaming the notifications differs per server (mastodon-family.md, "Scopes"): GoToSocial accepts only
  the top-level `read`; Mastodon (`streaming/index.js`, `checkScopes`) and Akkoma also accept
  `read:notifications`. Iceshrimp.NET's `user:notification` channel wants `read:statuses` and
  `read:notifications` together (`Streaming/Channels/UserChannel.cs`), so of the single scopes only `read`
  streams there. A server the bot does not know is assumed to want `read`.
- Iceshrimp.NET has no `profile` scope: its `MastodonOauthHelpers.ValidateScopes` refuses an app
  registration that names one. There the bot asks for `read:accounts` instead, which covers the same.
- Acting (issue 12) needs one scope per kind of action, the same granular names on every server the bot
  knows (each checked in its controllers): posting and boosting `write:statuses` (GoToSocial
  `statuscreate.go`/`statusboost.go`; Mastodon `StatusesController`, `Statuses::ReblogsController`; Akkoma
  `StatusController`), favourites `write:favourites`, follow requests `write:follows`. Mastodon
  (`FollowRequestsController`) and Akkoma also accept the deprecated `follow` for follow requests;
  GoToSocial has no `follow` scope at all. The broad `write` covers all three everywhere, but the bot
  asks for the least.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "ACTION_KINDS",
    "KNOWN_SCOPES",
    "TOP_LEVEL_SCOPES",
    "action_scopes",
    "can_act",
    "is_admin_scope",
    "is_scope_syntax",
    "normalize_scopes",
    "parse_scopes",
    "permits",
    "relay_scope_problem",
    "scope_string",
    "scopes_cover",
    "server_scopes",
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
    "iceshrimp.net": frozenset({"read"}),
}
# What each kind of action needs: the least scope the bot asks for, then what else the server accepts.
ACTION_KINDS: Final = ("statuses", "favourites", "follow_requests")
_ACTION_SCOPE: Final = {
    "statuses": "write:statuses",
    "favourites": "write:favourites",
    "follow_requests": "write:follows",
}
_LEGACY_FOLLOW_SERVERS: Final = frozenset({"mastodon", "akkoma", "pleroma", "iceshrimp.net"})
_SYNTAX = re.compile(r"[a-z]+(:[a-z_]+)*")
# Scopes a server does not know, and the scope it names the same permission with.
_RENAMED: Final = {"iceshrimp.net": {"profile": "read:accounts"}}


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


def server_scopes(scopes: Iterable[str], software: str | None) -> tuple[str, ...]:
    """The scopes as this server names them, canonical (see the module docstring for Iceshrimp.NET)."""
    renamed = _RENAMED.get((software or "").lower(), {})
    return normalize_scopes([renamed.get(scope, scope) for scope in scopes])


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


def action_scopes(software: str | None) -> frozenset[str]:
    """The least write scopes that let the bot post, reply, favourite, boost and answer follow requests
    on this server (the same names on every server the bot knows; see the module docstring)."""
    del software  # one vocabulary today; kept so a server with other names needs no caller change
    return frozenset(_ACTION_SCOPE.values())


def _accepted_for(kind: str, software: str | None) -> tuple[str, ...]:
    legacy = kind == "follow_requests" and (software or "").lower() in _LEGACY_FOLLOW_SERVERS
    return (_ACTION_SCOPE[kind], "follow") if legacy else (_ACTION_SCOPE[kind],)


def can_act(granted: Iterable[str] | str, software: str | None) -> bool:
    """Whether a token with these scopes may do every action of issue 12 on this server. Pure: decided
    from the stored scopes, with no server call."""
    has = parse_scopes(granted) if isinstance(granted, str) else tuple(granted)
    return all(
        any(permits(h, wanted) for h in has for wanted in _accepted_for(kind, software))
        for kind in ACTION_KINDS
    )
