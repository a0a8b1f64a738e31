"""Rich text as the bot sends it: a plain body and its HTML twin, built together from escaped parts.

Every Matrix message the bot writes (command replies, relayed notifications, warnings) is built here, so
escaping happens in one place: the functions below escape what they are given, and only HTML that is
already safe (sanitised remote HTML, see `bot.relay.sanitize`) may be passed to `RichText(...)` directly.

    RichText.text("Reconnect with ") + code("!gts connect example.org")
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EMPTY",
    "RichText",
    "blockquote",
    "bold",
    "bullets",
    "code",
    "join",
    "link",
    "paragraph",
    "spoiler",
]


@dataclass(frozen=True)
class RichText:
    """An immutable pair: `plain` is the m.notice body, `html` its formatted_body (already safe HTML)."""

    plain: str
    html: str

    @classmethod
    def text(cls, value: str) -> RichText:
        """Plain text; the HTML is the escaped text with line breaks kept."""
        return cls(value, html.escape(value).replace("\n", "<br>"))

    @classmethod
    def lines(cls, items: Iterable[RichText]) -> RichText:
        """The items one per line."""
        parts = list(items)
        return cls("\n".join(p.plain for p in parts), "<br>".join(p.html for p in parts))

    def __add__(self, other: RichText) -> RichText:
        return RichText(self.plain + other.plain, self.html + other.html)


EMPTY = RichText("", "")


def code(value: str) -> RichText:
    return RichText(value, f"<code>{html.escape(value)}</code>")


def bold(value: str) -> RichText:
    return RichText(value, f"<b>{html.escape(value)}</b>")


def link(url: str, label: str | None = None, *, plain: str | None = None) -> RichText:
    """A link. The plain form shows the URL so it can be copied ("label (url)"), unless `plain` says
    what to show instead (for instance only the label, when the URL is given elsewhere)."""
    shown = label if label is not None else url
    if plain is None:
        plain = url if label is None else f"{label} ({url})"
    return RichText(plain, f'<a href="{html.escape(url, quote=True)}">{html.escape(shown)}</a>')


def spoiler(reason: str, hidden: RichText, *, plain: str) -> RichText:
    """`hidden` behind a Matrix spoiler; plain clients see only `plain` (the hidden text is left out)."""
    return RichText(plain, f'<span data-mx-spoiler="{html.escape(reason, quote=True)}">{hidden.html}</span>')


def blockquote(inner: RichText) -> RichText:
    """A quoted block; in plain text it starts on a new line."""
    return RichText(f"\n{inner.plain}", f"<blockquote>{inner.html}</blockquote>")


def paragraph(inner: RichText) -> RichText:
    return RichText(inner.plain, f"<p>{inner.html}</p>")


def bullets(items: Iterable[RichText]) -> RichText:
    """A bulleted list; in plain text each item is an indented line of its own."""
    parts = list(items)
    return RichText(
        "".join(f"\n  {item.plain}" for item in parts),
        "<ul>" + "".join(f"<li>{item.html}</li>" for item in parts) + "</ul>",
    )


def join(*parts: RichText | str) -> RichText:
    """Concatenate rich texts and plain strings (strings are escaped)."""
    out = EMPTY
    for part in parts:
        out = out + (RichText.text(part) if isinstance(part, str) else part)
    return out
