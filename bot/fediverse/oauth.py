"""OAuth out-of-band flow, the pure parts: authorize URL, state, and reading a pasted code (scopes live in
`scopes`)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qs, urlencode, urlsplit

from bot.fediverse.instance import InstanceRef
from bot.fediverse.scopes import scope_string

__all__ = [
    "OOB_REDIRECT_URI",
    "authorize_url",
    "code_lifetime_minutes",
    "extract_code",
    "new_pkce_verifier",
    "new_state",
    "pkce_challenge",
]

OOB_REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob"
# How long an authorization code lives, per server (mastodon-family.md; gotosocial-client-api.md §3.4):
# GoToSocial rejects a code after about 5 minutes, Doorkeeper (Mastodon) and Akkoma keep it 10.
_CODE_LIFETIME_MINUTES = {"gotosocial": 5, "mastodon": 10, "akkoma": 10, "pleroma": 10}

MIN_CODE_LENGTH = 16
MAX_CODE_LENGTH = 256
_CODE = re.compile(r"^[A-Za-z0-9_\-~.]+$")
_QUOTES = "`'\"<>«»\u201c\u201d\u2018\u2019"


def code_lifetime_minutes(software: str | None) -> int | None:
    """About how many minutes a code from this server stays valid (None: not known for this server)."""
    return _CODE_LIFETIME_MINUTES.get((software or "").lower())


def new_state() -> str:
    return secrets.token_urlsafe(24)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_pkce_verifier() -> str:
    """A fresh PKCE code verifier for one flow (RFC 7636: 43 unreserved characters, 256 random bits).

    Random, never derived from the public `state`: it binds a code to the flow that asked for it on
    servers that enforce PKCE (Mastodon does; GoToSocial ignores it), so it is a secret of the flow and
    is stored encrypted with it. Another flow's verifier, even for the same shared app, does not redeem
    the code.
    """
    return secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def authorize_url(
    instance: InstanceRef,
    client_id: str,
    scopes: Iterable[str] | str,
    state: str,
    *,
    pkce_verifier: str,
) -> str:
    """The URL the user opens to allow access. `scope` is always explicit (the server default is `read`).

    It carries the challenge of the flow's PKCE verifier; the code exchange sends the verifier itself.
    """
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": OOB_REDIRECT_URI,
            "response_type": "code",
            "scope": scope_string(scopes),
            "state": state,
            "code_challenge": pkce_challenge(pkce_verifier),
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
