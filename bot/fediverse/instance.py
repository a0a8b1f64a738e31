"""What a user types as an instance → a validated `InstanceRef`. Pure: no I/O.

Accepted: `example.org`, `https://example.org/`, `EXAMPLE.org.`, `bücher.example` (stored as punycode),
`example.org:8443`, `@alice@example.org`, `alice@example.org`, `[2001:db8::1]:8443`.
Refused: paths, queries, fragments, credentials, other schemes, bad labels, whitespace or control characters.
An IP literal is accepted here; whether its address may be contacted is the address guard's decision.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import idna

from bot.errors import InvalidInstanceError

__all__ = ["InstanceRef", "normalize_host_pattern", "parse_instance"]

MAX_INPUT_LENGTH = 300
MAX_HOST_LENGTH = 253
_EXPECTED = "Give the instance's domain name, like example.org, https://example.org or @you@example.org."
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class InstanceRef:
    """A fediverse instance: scheme, ASCII (punycode, lowercase) host, and port when not the default."""

    scheme: Literal["https", "http"]
    host: str  # "example.org", "xn--bcher-kva.example", "2001:db8::1" (no brackets)
    port: int | None = None

    @property
    def is_ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def key(self) -> str:
        """The string to store and compare instances by."""
        return self.base_url

    @property
    def display(self) -> str:
        """The host as a person reads it (Unicode for IDNs), for messages."""
        if ":" in self.host:
            host = f"[{self.host}]"
        else:
            try:
                host = idna.decode(self.host)
            except idna.IDNAError:
                host = self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.scheme]

    def __str__(self) -> str:
        return self.display


def _fail(problem: str) -> InvalidInstanceError:
    return InvalidInstanceError(f"That is not an instance address: {problem}. {_EXPECTED}")


def parse_instance(
    text: str, *, allow_http: bool, default_scheme: Literal["https", "http"] = "https"
) -> InstanceRef:
    """Parse user input into an InstanceRef, or raise InvalidInstanceError saying what was expected.

    `default_scheme` applies when no scheme is typed; "http" is only honoured with `allow_http`.
    """
    text = text.strip()
    if not text:
        raise _fail("it is empty")
    if len(text) > MAX_INPUT_LENGTH:
        raise _fail(f"it is longer than {MAX_INPUT_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise _fail("it contains spaces or control characters")

    scheme: str
    if "://" in text:
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        if scheme not in ("https", "http"):
            raise _fail(f"only https:// addresses are supported, not {scheme[:20]}://")
    else:
        scheme, rest = default_scheme, text
    if scheme == "http" and not allow_http:
        raise _fail("plain http:// is not allowed; use https://")

    netloc, sep, tail = _split_netloc(rest)
    if sep == "/" and tail[:1] in ("?", "#"):
        sep, tail = tail[0], tail[1:]
    if sep and not (sep == "/" and tail == ""):
        what = {"/": "a path", "?": "a query string", "#": "a fragment"}[sep]
        raise _fail(f"it has {what} after the domain")
    if "@" in netloc and "://" not in text:
        if ":" in netloc.split("@")[0]:
            raise _fail("it looks like it contains a password")
        netloc = _host_from_handle(netloc)
    if "@" in netloc:
        raise _fail("web addresses with a user name or password are not accepted")

    host, port = _split_host_port(netloc)
    if port is not None and port == _DEFAULT_PORTS[scheme]:
        port = None
    return InstanceRef(scheme="https" if scheme == "https" else "http", host=_normalize_host(host), port=port)


def _host_from_handle(text: str) -> str:
    """`@alice@example.org` or `alice@example.org` → `example.org`."""
    parts = text.removeprefix("@").split("@")
    if len(parts) != 2 or not _USERNAME.match(parts[0]) or not parts[1]:
        raise _fail("a handle must look like @you@example.org")
    return parts[1]


def _split_netloc(rest: str) -> tuple[str, str, str]:
    for i, ch in enumerate(rest):
        if ch in "/?#":
            return rest[:i], ch, rest[i + 1 :]
    return rest, "", ""


def _split_host_port(netloc: str) -> tuple[str, int | None]:
    if not netloc:
        raise _fail("there is no domain name")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise _fail("an IPv6 address in brackets is missing its ']'")
        host, after = netloc[1:end], netloc[end + 1 :]
        if "%" in host:
            raise _fail("IPv6 zone identifiers are not accepted")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _fail("the text in brackets is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise _fail("unexpected text after the IPv6 address")
        return host, _parse_port(after[1:]) if after else None
    if netloc.count(":") > 1:
        raise _fail("IPv6 addresses must be written in brackets, like [2001:db8::1]")
    host, colon, port_text = netloc.partition(":")
    return host, _parse_port(port_text) if colon else None


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise _fail("the port must be a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _fail("the port must be between 1 and 65535")
    return port


def _normalize_host(host: str) -> str:
    if ":" in host:  # an IPv6 literal, already validated
        return ipaddress.IPv6Address(host).compressed
    host = host.removesuffix(".")
    if not host:
        raise _fail("there is no domain name")
    try:
        return ipaddress.IPv4Address(host).compressed
    except ValueError:
        pass
    if len(host) > MAX_HOST_LENGTH:
        raise _fail(f"the domain name is longer than {MAX_HOST_LENGTH} characters")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise _fail("the domain name contains characters or labels that are not allowed") from None
    if len(ascii_host) > MAX_HOST_LENGTH:
        raise _fail(f"the domain name is longer than {MAX_HOST_LENGTH} characters")
    labels = ascii_host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise _fail("the domain name contains characters or labels that are not allowed")
    last = labels[-1]
    # Forms like 127.1 or 0x7f.1 are not dotted quads but some resolvers read them as IPv4: refuse.
    if last.isdigit() or re.fullmatch(r"0x[0-9a-f]*", last):
        raise _fail("that is neither a domain name nor a valid IP address")
    return ascii_host


_WILDCARD = re.compile(r"[*?\[\]]")


def normalize_host_pattern(pattern: str) -> str:
    """A configured host or glob (`bücher.example`, `*.bücher.example`) in the form hosts are compared in.

    Hosts are compared as ASCII (punycode, lowercase), so every label without a wildcard goes through
    the same IDNA mapping as a host a user types; a wildcard may only stand in an ASCII label.
    Raises ValueError (without echoing more than the pattern) when the pattern cannot match any host.
    """
    text = pattern.strip().removesuffix(".")
    try:
        if not _WILDCARD.search(text):
            return _normalize_host(text)
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
        return ".".join(_pattern_label(label, pattern) for label in mapped.split("."))
    except (InvalidInstanceError, idna.IDNAError, UnicodeError):
        raise ValueError(f"{pattern!r} is not a host name or pattern") from None


def _pattern_label(label: str, pattern: str) -> str:
    if not _WILDCARD.search(label):
        return idna.encode(label, uts46=True).decode("ascii")
    if not label.isascii():
        raise ValueError(f"{pattern!r}: a wildcard may only stand in an ASCII label (write IDNs in full)")
    return label.lower()
