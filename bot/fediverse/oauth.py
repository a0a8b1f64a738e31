"""OAuth out-of-band flow, the pure parts: authorize URL, state, scopes, and reading a pasted code."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qs, urlencode, urlsplit

from bot.fediverse.instance import InstanceRef

__all__ = [
    "OOB_REDIRECT_URI",
    "TOP_LEVEL_SCOPES",
    "authorize_url",
    "extract_code",
    "new_state",
    "normalize_scopes",
    "parse_scopes",
    "permits",
    "pkce_challenge",
    "pkce_verifier",
    "scope_string",
    "scopes_cover",
]

OOB_REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob"
# GoToSocial's known top-level scopes (reference §5); only these cover `<scope>:...`.
TOP_LEVEL_SCOPES = frozenset({"profile", "push", "read", "write", "admin", "admin:read", "admin:write"})

MIN_CODE_LENGTH = 16
MAX_CODE_LENGTH = 256
_CODE = re.compile(r"^[A-Za-z0-9_\-~.]+$")
_QUOTES = "`'\"<>«»\u201c\u201d\u2018\u2019"


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


def scope_string(scopes: Iterable[str]) -> str:
    return " ".join(normalize_scopes(scopes))


def permits(has: str, wanted: str) -> bool:
    """GoToSocial's `Scope.Permits`: equal, or `has` is a known top-level scope and `wanted` is under it."""
    return has == wanted or (has in TOP_LEVEL_SCOPES and wanted.startswith(has + ":"))


def scopes_cover(granted: Iterable[str] | str, requested: Iterable[str] | str) -> bool:
    """True if every requested scope is permitted by at least one granted scope."""
    has = parse_scopes(granted) if isinstance(granted, str) else tuple(granted)
    wanted = parse_scopes(requested) if isinstance(requested, str) else tuple(requested)
    return all(any(permits(h, w) for h in has) for w in wanted)


def new_state() -> str:
    return secrets.token_urlsafe(24)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def pkce_verifier(state: str) -> str:
    """The PKCE code verifier of the flow whose OAuth state is `state` (RFC 7636, 43 characters).

    Derived from the state, so nothing more is stored. It binds a code to the flow that asked for it on
    servers that enforce PKCE (Mastodon does; GoToSocial ignores it): another flow's verifier, even for
    the same shared app, does not redeem the code.
    """
    return _b64url(hashlib.sha256(b"gts-bot pkce verifier\0" + state.encode()).digest())


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def authorize_url(instance: InstanceRef, client_id: str, scopes: Iterable[str] | str, state: str) -> str:
    """The URL the user opens to allow access. `scope` is always explicit (the server default is `read`).

    It carries the flow's PKCE challenge (`pkce_verifier(state)`); the code exchange sends the verifier.
    """
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": OOB_REDIRECT_URI,
            "response_type": "code",
            "scope": scope_string(parse_scopes(scopes) if isinstance(scopes, str) else scopes),
            "state": state,
            "code_challenge": pkce_challenge(pkce_verifier(state)),
            "code_challenge_method": "S256",
        }
    )
    return f"{instance.base_url}/oauth/authorize?{query}"


def extract_code(pasted: str) -> str | None:
    """The authorization code in what a user pasted: the bare code (whitespace and quotes around it are
    dropped) or the whole `/oauth/oob?code=...` URL. None when it does not look like a code."""
    text = pasted.strip().strip(_QUOTES).strip()
    if len(text) > 4 * MAX_CODE_LENGTH:
        return None
    if "code=" in text:
        query = urlsplit(text).query if "?" in text else text
        values = parse_qs(query).get("code", [])
        if len(values) != 1:
            return None
        text = values[0].strip()
    else:
        text = "".join(text.split())
    if not MIN_CODE_LENGTH <= len(text) <= MAX_CODE_LENGTH or not _CODE.match(text):
        return None
    return text
