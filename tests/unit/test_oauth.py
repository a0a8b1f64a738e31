"""The pure OAuth helpers: authorize URL, state, scopes (GoToSocial's Permits rule), pasted codes."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.fediverse.instance import parse_instance
from bot.fediverse.oauth import (
    OOB_REDIRECT_URI,
    authorize_url,
    code_in_sentence,
    extract_code,
    new_pkce_verifier,
    new_state,
    pkce_challenge,
)
from bot.fediverse.scopes import (
    normalize_scopes,
    parse_scopes,
    permits,
    relay_scope_problem,
    scope_string,
    scopes_cover,
    server_scopes,
    streams_with,
)

GTS_CODE = "ZJJHNDQ0ZTYTNME0OS0ZYZI4LTLMZTKTZTY4OWZKMTYZMJA1"
MASTODON_CODE = "q1T3n_0Jv5yq7f8Hh2c-2d0ZC6pQnN8pQ1Yq2xVZ4aE"


def test_authorize_url_has_every_parameter_explicitly() -> None:
    instance = parse_instance("bücher.example:8443", allow_http=False)
    url = authorize_url(instance, "01CLIENT", ["write", "read", "read"], "st4te", pkce_verifier="v" * 43)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "xn--bcher-kva.example:8443",
        "/oauth/authorize",
    )
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "client_id": ["01CLIENT"],
        "redirect_uri": [OOB_REDIRECT_URI],
        "response_type": ["code"],
        "scope": ["read write"],
        "state": ["st4te"],
        "code_challenge": [pkce_challenge("v" * 43)],
        "code_challenge_method": ["S256"],
    }


def test_pkce_verifiers_are_random_not_derived_from_the_state() -> None:
    verifiers = {new_pkce_verifier() for _ in range(100)}
    assert len(verifiers) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", v) for v in verifiers)  # RFC 7636 length and alphabet


def test_authorize_url_escapes_values() -> None:
    url = authorize_url(
        parse_instance("example.org", allow_http=False), "a&b=c", "read", "x y#z", pkce_verifier="v" * 43
    )
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == ["a&b=c"]
    assert query["state"] == ["x y#z"]
    assert "#" not in url


def test_new_state_is_random_and_url_safe() -> None:
    states = {new_state() for _ in range(50)}
    assert len(states) == 50
    assert all(len(s) >= 32 and s.replace("-", "").replace("_", "").isalnum() for s in states)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read write", ("read", "write")),
        ("  read   write read ", ("read", "write")),
        ("", ()),
        ("read\twrite\nfollow", ("read", "write", "follow")),
    ],
)
def test_parse_scopes(text: str, expected: tuple[str, ...]) -> None:
    assert parse_scopes(text) == expected


def test_normalize_scopes_is_order_and_duplicate_insensitive() -> None:
    assert normalize_scopes(["write", "read", "read"]) == ("read", "write")
    assert normalize_scopes("write  read") == ("read", "write")
    assert normalize_scopes(["read:notifications read:accounts"]) == ("read:accounts", "read:notifications")
    assert scope_string(["write", "read"]) == "read write"


@pytest.mark.parametrize(
    ("has", "wanted", "ok"),
    [
        ("read", "read", True),
        ("read", "read:notifications", True),
        ("read", "read:accounts", True),
        ("write", "write:statuses", True),
        ("admin", "admin:read:accounts", True),
        ("admin:read", "admin:read:accounts", True),
        ("profile", "profile", True),
        ("read:notifications", "read", False),  # granular never covers top-level
        ("read", "write:statuses", False),
        ("read", "readx", False),
        ("read", "read:", True),  # prefix rule, exactly as GoToSocial
        ("follow", "follow", True),  # unknown scopes cover only themselves
        ("follow", "follow:x", False),
        ("bogus", "bogus:thing", False),
        ("read:accounts", "read:accounts:x", False),
        ("write", "read:notifications", False),
    ],
)
def test_permits(has: str, wanted: str, ok: bool) -> None:
    assert permits(has, wanted) is ok


@pytest.mark.parametrize(
    ("granted", "requested", "ok"),
    [
        ("read", "read", True),
        ("read write", "read:notifications read:accounts", True),
        ("read:notifications read:accounts", "read", False),
        ("read:notifications", "read:notifications read:accounts", False),
        ("read write follow push", "follow", True),
        ("read", "", True),
        ("", "read", False),
        (("read",), ("read:notifications",), True),
    ],
)
def test_scopes_cover(granted: str | tuple[str, ...], requested: str | tuple[str, ...], ok: bool) -> None:
    assert scopes_cover(granted, requested) is ok


@pytest.mark.parametrize(
    ("pasted", "code"),
    [
        (GTS_CODE, GTS_CODE),
        (f"  {GTS_CODE}\n", GTS_CODE),
        (f"`{GTS_CODE}`", GTS_CODE),
        (f'"{GTS_CODE}"', GTS_CODE),
        (f"{GTS_CODE[:20]} {GTS_CODE[20:]}", GTS_CODE),  # a line break or space from copying
        (f"{GTS_CODE[:20]}\n{GTS_CODE[20:]}", GTS_CODE),
        (MASTODON_CODE, MASTODON_CODE),
        (f"https://example.org/oauth/oob?code={GTS_CODE}&state=abc", GTS_CODE),
        (f"/oauth/oob?code={GTS_CODE}", GTS_CODE),
        (f"code={GTS_CODE}", GTS_CODE),
        (f"<https://example.org/oauth/oob?state=s&code={GTS_CODE}>", GTS_CODE),
        ("abc.DEF~ghi_jkl-mno", "abc.DEF~ghi_jkl-mno"),
        (f"{GTS_CODE[:10]}\n{GTS_CODE[10:]}", GTS_CODE),  # broken where one piece is short
        (f"here it is: {GTS_CODE}", GTS_CODE),  # one code-shaped word in a sentence
        (f"Here is my code '{MASTODON_CODE}', thanks!", MASTODON_CODE),
        (f"the page said https://example.org/oauth/oob?code={GTS_CODE}&state=s1 ok", GTS_CODE),
    ],
)
def test_extract_code_accepts_what_people_paste(pasted: str, code: str) -> None:
    assert extract_code(pasted) == code


@pytest.mark.parametrize(
    "pasted",
    [
        "",
        "   ",
        "hello",  # too short
        "x" * 257,  # too long
        "x" * 5000,
        "!gts code",
        f"{GTS_CODE}!",
        f"{GTS_CODE};DROP TABLE",
        "<script>alert(1)</script>abcdefghijkl",
        "https://example.org/oauth/oob?state=abc",  # no code in the URL
        f"https://example.org/oauth/oob?code={GTS_CODE}&code=OTHERCODE1234567890",  # ambiguous
        "https://example.org/oauth/oob?code=short",
        "ÄÖÜäöüßÄÖÜäöüßÄÖÜäöüß",
        "code=",
    ],
)
def test_extract_code_rejects_garbage(pasted: str) -> None:
    assert extract_code(pasted) is None


@pytest.mark.parametrize(
    ("granted", "software", "streams"),
    [
        ("read", "gotosocial", True),
        ("read:notifications profile", "gotosocial", False),  # GoToSocial: 403 at the handshake
        ("read:notifications profile", "mastodon", True),  # Mastodon's checkScopes accepts it
        ("read:notifications profile", "akkoma", True),
        ("read:notifications profile", None, False),  # an unknown server: assume GoToSocial's rule
        ("read:accounts profile", "mastodon", False),
        ("read", "iceshrimp.net", True),
        # Iceshrimp.NET's user:notification channel also wants read:statuses: it closes the socket (1008)
        ("read:notifications read:accounts", "iceshrimp.net", False),
    ],
)
def test_streaming_scopes_per_server(granted: str, software: str | None, streams: bool) -> None:
    assert streams_with(granted, software) is streams


@pytest.mark.parametrize(
    ("asked", "software", "sent"),
    [
        (("profile", "read:notifications"), "iceshrimp.net", ("read:accounts", "read:notifications")),
        (("profile", "read:accounts"), "Iceshrimp.NET", ("read:accounts",)),
        (("read",), "iceshrimp.net", ("read",)),
        (("profile", "read:notifications"), "mastodon", ("profile", "read:notifications")),
        (("profile", "read:notifications"), None, ("profile", "read:notifications")),
    ],
)
def test_server_scopes_rename_what_a_server_does_not_know(
    asked: tuple[str, ...], software: str | None, sent: tuple[str, ...]
) -> None:
    assert server_scopes(asked, software) == sent


@pytest.mark.parametrize(
    ("scopes", "ok"),
    [
        ("read", True),
        ("read:notifications profile", True),
        ("read:notifications read:accounts", True),
        ("read:notifications", False),
        ("profile write", False),
    ],
)
def test_what_a_relay_needs(scopes: str, ok: bool) -> None:
    assert (relay_scope_problem(scopes) is None) is ok


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"here it is: {GTS_CODE}.", GTS_CODE),
        (f"code {MASTODON_CODE} please", MASTODON_CODE),
        (GTS_CODE, None),  # one word is not a sentence
        (f"{GTS_CODE[:20]} {GTS_CODE[20:]}", None),  # pieces of one code, no prose
        (f"{GTS_CODE} and {MASTODON_CODE}", None),  # which one?
        ("the build 3f9a2c1 passed on internationalization", None),  # ordinary chat
        ("hello there, how are you doing today?", None),
        ("fixed in 3f9a2c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1, thanks", None),  # a commit hash
        ("see 123e4567-e89b-12d3-a456-426614174000 in the log", None),  # a UUID
        ("my token is ABCDEFGH1234567 ok", None),  # shorter than any server's code
    ],
)
def test_code_in_sentence(text: str, found: str | None) -> None:
    assert code_in_sentence(text) == found
