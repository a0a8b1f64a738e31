"""parse_instance: what a user may type as an instance, and what is refused."""

from __future__ import annotations

import pytest

from bot.errors import InvalidInstanceError
from bot.fediverse.instance import InstanceRef, parse_instance


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port"),
    [
        ("example.org", "https", "example.org", None),
        ("  example.org  ", "https", "example.org", None),
        ("example.org\n", "https", "example.org", None),
        ("https://example.org", "https", "example.org", None),
        ("https://example.org/", "https", "example.org", None),
        ("HTTPS://EXAMPLE.org/", "https", "example.org", None),
        ("EXAMPLE.org", "https", "example.org", None),
        ("example.org.", "https", "example.org", None),
        ("example.org/", "https", "example.org", None),
        ("example.org:8443", "https", "example.org", 8443),
        ("example.org:443", "https", "example.org", None),
        ("https://example.org:0443/", "https", "example.org", None),
        ("@alice@example.org", "https", "example.org", None),
        ("alice@example.org", "https", "example.org", None),
        ("@alice.b-c_d@Social.Example.org", "https", "social.example.org", None),
        ("bücher.example", "https", "xn--bcher-kva.example", None),
        ("BÜCHER.example", "https", "xn--bcher-kva.example", None),
        ("@anna@bücher.example", "https", "xn--bcher-kva.example", None),
        ("xn--bcher-kva.example", "https", "xn--bcher-kva.example", None),
        ("straße.example", "https", "xn--strae-oqa.example", None),
        ("[2001:db8::1]", "https", "2001:db8::1", None),
        ("https://[2001:DB8:0::1]:8443/", "https", "2001:db8::1", 8443),
        ("203.0.113.7", "https", "203.0.113.7", None),
        ("10.0.0.5:8080", "https", "10.0.0.5", 8080),  # the address guard refuses it later
        ("gotosocial:8080", "https", "gotosocial", 8080),
        ("a-b.c-d.example", "https", "a-b.c-d.example", None),
    ],
)
def test_accepted_inputs(text: str, scheme: str, host: str, port: int | None) -> None:
    ref = parse_instance(text, allow_http=False)
    assert (ref.scheme, ref.host, ref.port) == (scheme, host, port)


@pytest.mark.parametrize(
    ("text", "base_url"),
    [
        ("http://127.0.0.1:43123", "http://127.0.0.1:43123"),
        ("http://example.org:80/", "http://example.org"),
        ("HTTP://Example.org", "http://example.org"),
    ],
)
def test_http_only_when_allowed(text: str, base_url: str) -> None:
    assert parse_instance(text, allow_http=True).base_url == base_url
    with pytest.raises(InvalidInstanceError, match="http"):
        parse_instance(text, allow_http=False)


def test_default_scheme_http_needs_allow_http() -> None:
    assert parse_instance("127.0.0.1:8080", allow_http=True, default_scheme="http").base_url == (
        "http://127.0.0.1:8080"
    )
    with pytest.raises(InvalidInstanceError):
        parse_instance("127.0.0.1:8080", allow_http=False, default_scheme="http")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("https://example.org/about", "path"),
        ("example.org/@alice", "path"),
        ("https://example.org/?x=1", "query"),
        ("https://example.org?x=1", "query"),
        ("https://example.org#frag", "fragment"),
        ("https://user:pw@example.org", "password"),
        ("https://user@example.org", "password"),
        ("alice:secret@example.org", "password"),
        ("ftp://example.org", "https"),
        ("javascript://example.org", "https"),
        ("file:///etc/passwd", "https"),
        ("gopher://example.org:70", "https"),
        ("exa mple.org", "spaces"),
        ("exam\tple.org", "spaces"),
        ("example.org\x00.evil", "control"),
        ("example.org\u200b", None),
        ("exa\x7fmple.org", "control"),
        ("a" * 301, "longer"),
        ("a" * 64 + ".example", "not allowed"),
        (".".join(["a" * 60] * 5), "longer"),
        ("-leading.example", "not allowed"),
        ("trailing-.example", "not allowed"),
        ("under_score.example", "not allowed"),
        ("exa..mple.org", "not allowed"),
        (".example.org", "not allowed"),
        ("example.org:0", "between 1 and 65535"),
        ("example.org:65536", "between 1 and 65535"),
        ("example.org:99999999", "port"),
        ("example.org:-1", "port"),
        ("example.org:http", "port"),
        ("example.org:", "port"),
        ("example.org:٣٣", "port"),
        ("2001:db8::1", "brackets"),
        ("[2001:db8::1", "']'"),
        ("[not-ipv6]", "IPv6"),
        ("[fe80::1%25eth0]", "zone"),
        ("[2001:db8::1]x", "unexpected"),
        ("127.1", "neither"),
        ("0x7f.1", "neither"),
        ("1.2.3.4.5", "neither"),
        ("@alice", "handle"),
        ("@@example.org", "handle"),
        ("@alice@bob@example.org", "handle"),
        ("@al ice@example.org", "spaces"),
        ("https://", "no domain"),
        (":8080", "no domain"),
        ("exa$mple.org", "not allowed"),
        ("xn--zz.example", "not allowed"),
        ("\u202eexample.org", None),
    ],
)
def test_refused_inputs(text: str, needle: str | None) -> None:
    with pytest.raises(InvalidInstanceError) as info:
        parse_instance(text, allow_http=False)
    message = str(info.value)
    assert "example.org or @you@example.org" in message  # always says what is expected
    if needle is not None:
        assert needle in message
    assert "secret" not in message
    assert "pw@" not in message


def test_ref_properties() -> None:
    ref = parse_instance("@anna@Bücher.example:8443", allow_http=False)
    assert ref == InstanceRef("https", "xn--bcher-kva.example", 8443)
    assert ref.base_url == "https://xn--bcher-kva.example:8443"
    assert ref.key == ref.base_url
    assert ref.display == "bücher.example:8443"
    assert str(ref) == ref.display
    assert ref.effective_port == 8443
    assert not ref.is_ip_literal

    v6 = parse_instance("[2001:db8::1]", allow_http=False)
    assert v6.base_url == "https://[2001:db8::1]"
    assert v6.display == "[2001:db8::1]"
    assert v6.effective_port == 443
    assert v6.is_ip_literal


def test_equal_inputs_give_equal_keys() -> None:
    keys = {
        parse_instance(t, allow_http=False).key
        for t in ("example.org", "https://EXAMPLE.org/", "@a@example.org", "example.org.:443")
    }
    assert keys == {"https://example.org"}
