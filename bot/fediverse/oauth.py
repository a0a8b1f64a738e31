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
    "code_in_sentence",
    "code_lifetime_minutes",
    "extract_code",
    "is_code_shaped",
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
_PUNCTUATION = ".,;:!?()"  # what a sentence puts around a word
_HEX = re.compile(r"^[0-9A-Fa-f-]+$")  # commit hashes, UUIDs
_CODE_SHAPE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9_\-~.]{20,256}$")


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


def is_code_shaped(word: str) -> bool:
    """Whether one word looks like an authorization code rather than a word of chat: 20+ characters of
    the code alphabet with a letter, and a digit or a length no chat word has (a 48-character GoToSocial
    code may lack digits)."""
    return bool(_CODE_SHAPE.match(word)) and (any(c.isdigit() for c in word) or len(word) >= 32)


def _is_prose(word: str) -> bool:
    """A word of a sentence, not a piece of a code broken across lines: punctuation, or lower case."""
    return not _CODE.match(word) or (word.isalpha() and word.islower())


def _code_among_prose(word: str) -> bool:
    """Stricter than `is_code_shaped` for a word inside a sentence, where chat has commit hashes and
    UUIDs: as long as real codes are (GoToSocial 48, Mastodon and Akkoma 43), and not just hex."""
    return is_code_shaped(word) and len(word) >= 32 and not _HEX.match(word)


def code_in_sentence(text: str) -> str | None:
    """The one code-shaped word (or `code=` URL) among words of prose, like "here it is: <code>".

    None for a single word, for several code-shaped words, and for pieces of one code broken across
    lines (no word of prose among them)."""
    words = text.split()
    if len(words) < 2:
        return None
    trimmed = [w.strip(_QUOTES + _PUNCTUATION) for w in words]
    urls = [w for w in trimmed if "code=" in w]
    coded = urls or [w for w in trimmed if _code_among_prose(w)]
    if len(coded) != 1:
        return None
    others = [word for word, bare in zip(words, trimmed, strict=True) if bare != coded[0]]
    return coded[0] if any(_is_prose(w) for w in others) else None


def extract_code(pasted: str) -> str | None:
    """The authorization code in what a user pasted: the bare code (whitespace and quotes around it are
    dropped), the whole `/oauth/oob?code=...` URL, or one code-shaped word in a sentence. None when it
    does not look like a code."""
    text = pasted.strip().strip(_QUOTES).strip()
    if len(text) > 4 * MAX_CODE_LENGTH:
        return None
    text = code_in_sentence(text) or text
    if "code=" in text:
        query = urlsplit(text).query if "?" in text else text
        values = parse_qs(query).get("code", [])
        if len(values) != 1:
            return None
        text = values[0].strip()
    else:
        text = "".join(text.split())  # a code broken across lines by copying
    if not MIN_CODE_LENGTH <= len(text) <= MAX_CODE_LENGTH or not _CODE.match(text):
        return None
    return text
