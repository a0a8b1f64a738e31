"""Replies as the bot writes them: a plain body and its HTML twin, built from escaped parts."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One m.notice: `plain` is the body, `html` the formatted_body."""

    plain: str
    html: str

    @classmethod
    def text(cls, text: str) -> Reply:
        """A reply from plain text; the HTML is the escaped text with line breaks kept."""
        return cls(text, html.escape(text).replace("\n", "<br>"))

    @classmethod
    def lines(cls, lines: Iterable[Reply]) -> Reply:
        parts = list(lines)
        return cls("\n".join(p.plain for p in parts), "<br>".join(p.html for p in parts))

    def __add__(self, other: Reply) -> Reply:
        return Reply(self.plain + other.plain, self.html + other.html)


def code(text: str) -> Reply:
    return Reply(text, f"<code>{html.escape(text)}</code>")


def bold(text: str) -> Reply:
    return Reply(text, f"<b>{html.escape(text)}</b>")


def link(url: str, label: str | None = None) -> Reply:
    """A link; the plain form shows the URL itself so it can be copied."""
    shown = label if label is not None else url
    plain = url if label is None else f"{label} ({url})"
    return Reply(plain, f'<a href="{html.escape(url, quote=True)}">{html.escape(shown)}</a>')


def join(*parts: Reply | str) -> Reply:
    """Concatenate replies and plain strings (strings are escaped)."""
    out = Reply("", "")
    for part in parts:
        out = out + (Reply.text(part) if isinstance(part, str) else part)
    return out
