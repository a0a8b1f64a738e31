"""Pure helpers that make remote text safe to show in Matrix.

- `sanitize_html`: untrusted status HTML → the subset of HTML Matrix clients render (no remote images).
- `html_to_text`: status HTML → plain text for the message body.
- `clean_line`: a single-line field (display name, acct, content warning) without control characters or
  bidi overrides, whitespace collapsed, truncated.
- `safe_url`: an http(s) URL or None; anything else (javascript:, data:, relative, malformed) is dropped.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from html.parser import HTMLParser
from urllib.parse import urlsplit

import nh3

__all__ = [
    "ELLIPSIS",
    "clean_line",
    "clean_multiline",
    "html_to_text",
    "safe_url",
    "sanitize_html",
    "truncate",
]

ELLIPSIS = "…"

# The Matrix client-server spec's recommended HTML subset (m.room.message msgtypes), without `img`:
# Matrix only allows mxc:// images and remote content only has http(s) ones (tracking pixels).
_ALLOWED_TAGS = frozenset(
    {
        "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
        "sub", "li", "b", "i", "u", "strong", "em", "strike", "code", "hr", "br", "div", "table",
        "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "details", "summary",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href"},
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler"},
    "code": {"class"},
    "ol": {"start"},
}
_CONTENT_DROPPED_TAGS = frozenset({"script", "style", "template", "noscript", "textarea", "title"})
_CODE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")
_OL_START = re.compile(r"[0-9]{1,6}")

# Explicit directional embeddings/overrides/isolates and marks: a display name with these can reorder
# the text around it (e.g. make "evil" read as "live").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_SPACE_RUN = re.compile(r"[ \t]+")
_MAX_URL_LENGTH = 2048


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # Called from Rust; must never raise (a raise becomes an unraisable-exception warning).
    if tag == "code" and attribute == "class":
        return value if _CODE_CLASS.fullmatch(value) else None
    if attribute in {"data-mx-color", "data-mx-bg-color", "color"}:
        return value if _COLOR.fullmatch(value) else None
    if tag == "ol" and attribute == "start":
        return value if _OL_START.fullmatch(value) else None
    return value


@functools.cache
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_CONTENT_DROPPED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in _ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer",
        url_schemes={"http", "https", "mailto"},
        url_relative="deny",
    )


def sanitize_html(untrusted: str) -> str:
    """Clean untrusted HTML down to the Matrix subset; links get rel="noopener noreferrer"."""
    result: str = _cleaner().clean(_strip_controls(untrusted, single_line=False))
    return result


def truncate(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` characters, ending with an ellipsis when cut."""
    if limit < 1:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + ELLIPSIS


def _strip_controls(text: str, *, single_line: bool) -> str:
    """Drop control characters; line breaks become newlines (or a space when `single_line`).

    Bidi overrides are dropped only from single-line fields: in multi-line content they are legitimate
    (right-to-left text) and each line or block resets their effect.
    """
    out: list[str] = []
    for ch in text.replace("\r\n", "\n"):
        if ch in _LINE_BREAKS or ch == "\t":
            out.append(" " if single_line else ("\t" if ch == "\t" else "\n"))
        elif unicodedata.category(ch) in ("Cc", "Cs") or (single_line and ch in _BIDI_CONTROLS):
            continue
        else:
            out.append(ch)
    return "".join(out)


def clean_line(text: str, limit: int) -> str:
    """A one-line field fit for display: no controls or bidi overrides, spaces collapsed, truncated."""
    flat = _strip_controls(text, single_line=True)
    return truncate(_SPACE_RUN.sub(" ", flat).strip(), limit)


def clean_multiline(text: str) -> str:
    """Multi-line text without control characters (newlines and tabs kept, bidi marks kept)."""
    return _strip_controls(text, single_line=False)


def safe_url(value: object) -> str | None:
    """`value` if it is an absolute http(s) URL with a host and nothing odd in it, else None."""
    if not isinstance(value, str) or not value or len(value) > _MAX_URL_LENGTH:
        return None
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        return None
    if any(ch in value for ch in '"<>\\`'):
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or not host:
        return None
    return value


_BLOCK_TAGS = frozenset(
    {
        "p", "div", "blockquote", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table",
        "tr", "hr", "details", "summary", "section", "article", "header", "footer", "figure",
    }
)  # fmt: skip
_PARAGRAPH_TAGS = frozenset(
    {"p", "blockquote", "pre", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6"}
)
_VOID_SKIP = frozenset({"img", "input", "meta", "link", "source", "track", "wbr", "embed"})
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
# Text of an element that will never be shown in HTML; keep it out of the plain version too.
_SKIP_CONTENT_TAGS = _CONTENT_DROPPED_TAGS | {"head", "svg", "math", "object", "iframe"}


# Placeholders while extracting: a line break that is not HTML whitespace, and a space inside <pre>
# that line stripping must keep. Both are removed from the input first.
_NEWLINE = "\x00"
_PRE_SPACE = "\x01"


class _TextExtractor(HTMLParser):
    """Collects text the way a browser would lay it out: <br> and blocks become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0

    def _newlines(self, count: int) -> None:
        self.parts.append(_NEWLINE * count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_CONTENT_TAGS:
            self._skip_depth += 1
        elif tag == "br":
            self._newlines(1)
        elif tag == "li":
            self._newlines(1)
            self.parts.append("• ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _BLOCK_TAGS:
            self._newlines(2 if tag in _PARAGRAPH_TAGS else 1)
            if tag == "pre":
                self._pre_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._newlines(1)
        elif tag == "hr":
            self._newlines(2)
        elif tag not in _VOID_SKIP and tag not in _SKIP_CONTENT_TAGS:
            self.handle_starttag(tag, attrs)
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_CONTENT_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self._newlines(2 if tag in _PARAGRAPH_TAGS else 1)
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self.parts.append(data.replace("\n", _NEWLINE).replace(" ", _PRE_SPACE).replace("\t", _PRE_SPACE))
        else:
            self.parts.append(_HTML_SPACE.sub(" ", data))


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, <br>/<p> as line breaks."""
    parser = _TextExtractor()
    parser.feed(fragment.replace(_NEWLINE, "").replace(_PRE_SPACE, ""))
    parser.close()
    joined = "".join(parser.parts)
    lines = [_SPACE_RUN.sub(" ", line).strip().replace(_PRE_SPACE, " ") for line in joined.split(_NEWLINE)]
    text = "\n".join(lines)
    return clean_multiline(_MANY_NEWLINES.sub("\n\n", text).strip())
