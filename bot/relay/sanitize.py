"""Pure helpers that make remote text safe to show in Matrix.

- `sanitize_html`: untrusted status HTML → the subset of HTML Matrix clients render (no remote images).
- `html_to_text`: status HTML → plain text for the message body.
- `render_html`: status HTML → the sanitised HTML and the plain text of that same HTML, in bounded time.
- `clean_line`: a single-line field (display name, acct, content warning) without control characters or
  bidi overrides, whitespace collapsed, truncated.
- `safe_url`: an http(s) URL or None; anything else (javascript:, data:, relative, malformed) is dropped.

Remote text never pings anyone: `@room` gets an invisible word joiner and matrix.to links lose their href.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

import nh3

__all__ = [
    "ELLIPSIS",
    "MAX_HTML_CHARS",
    "MAX_HTML_MARKUP",
    "RichText",
    "clean_line",
    "clean_multiline",
    "html_to_text",
    "render_html",
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
# Elements whose text a browser does not show as part of the post (or shows only as a fallback): dropped
# with their content, from both bodies.
_CONTENT_DROPPED_TAGS = frozenset(
    {
        "script", "style", "template", "noscript", "textarea", "title", "head", "svg", "math", "object",
        "iframe", "embed", "noembed", "noframes", "frameset", "applet",
    }
)  # fmt: skip
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
    if tag == "a" and attribute == "href" and _is_matrix_permalink(value):
        return None  # a matrix.to link renders as a pill of a Matrix user or room: keep only its text
    return value


def _is_matrix_permalink(url: str) -> bool:
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return True
    return host is not None and host.rstrip(".") == "matrix.to"


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
    return truncate(_neutralise(_SPACE_RUN.sub(" ", flat).strip()), limit)


def clean_multiline(text: str) -> str:
    """Multi-line text without control characters (newlines and tabs kept, bidi marks kept), no @room."""
    return _neutralise(_strip_controls(text, single_line=False))


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


# -- one builder for both bodies -------------------------------------------------------------------------
#
# The plain body is read from the sanitised HTML itself, so both always say the same words. The work is
# bounded by the input, whatever it is: remote HTML is cut to MAX_HTML_CHARS, and only its first
# MAX_HTML_MARKUP "<" can open markup (later tags are dropped, their text kept). html5ever (nh3) is
# linear in the input but walks its stack of open elements per tag, so it costs O(tags x depth): capping
# the tags caps that. What nh3 returns is well-formed (every "<" opens a tag, "<" and ">" in attribute
# values are escaped), so one linear scan reads it.

MAX_HTML_CHARS = 50_000
"""Remote HTML beyond this many characters is cut before it is parsed (GoToSocial allows 5,000
characters of post text, Mastodon 500; their HTML for that is a few times longer)."""
MAX_HTML_MARKUP = 1_000
"""At most this many "<" in remote HTML may open markup (tags, comments); later tags are dropped."""


@dataclass(frozen=True)
class RichText:
    """The same content as a plain body and as Matrix HTML."""

    plain: str
    html: str


def sanitize_html(untrusted: str) -> str:
    """Clean untrusted HTML down to the Matrix subset; links get rel="noopener noreferrer"."""
    return render_html(untrusted).html


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, <br>/<p> as line breaks."""
    return render_html(fragment).plain


def render_html(untrusted: str) -> RichText:
    """Untrusted HTML → its sanitised Matrix HTML and the plain text of exactly that HTML.

    Work is linear in the input (see MAX_HTML_CHARS, MAX_HTML_MARKUP). `@room` is neutralised in both
    and matrix.to links lose their href, so relayed text can never ping or pill anyone.
    """
    # Controls are stripped again afterwards: the parser decodes entities such as "&#7;" into them.
    bounded = _bounded_markup(_strip_controls(untrusted[:MAX_HTML_CHARS], single_line=False))
    cleaned = _strip_controls(_cleaner().clean(bounded), single_line=False)
    html_out: list[str] = []
    text = _TextBuilder()
    for match in _TOKEN.finditer(cleaned):
        closing, tag, raw_text = match.group(1), match.group(2), match.group(4)
        if tag is not None:
            html_out.append(match.group(0))
            text.tag(tag, closing=bool(closing))
        else:  # text, or (never from nh3, but never fatal) a "<" that opens nothing
            raw_text = raw_text or "&lt;"
            html_out.append(_neutralise(raw_text))
            text.data(html.unescape(raw_text))
    return RichText(plain=_neutralise(text.result()), html="".join(html_out))


def markup_budget(untrusted: str) -> int:
    """How many "<" of `untrusted` the parser will see as possible markup (for tests and benchmarks)."""
    return _bounded_markup(untrusted).count("<")


def _bounded_markup(untrusted: str) -> str:
    text = untrusted[:MAX_HTML_CHARS]
    position = -1
    for _ in range(MAX_HTML_MARKUP + 1):
        position = text.find("<", position + 1)
        if position < 0:
            return text
    # Past the budget, whatever looks like a tag is dropped and any other "<" is text.
    return text[:position] + _TAG_LIKE.sub("", text[position:]).replace("<", "&lt;")


_TAG_LIKE = re.compile(r"<[^<>]*>")  # each attempt stops at the next "<": linear


# nh3 serialises a tree: tags with double-quoted, escaped attribute values; text with "<" escaped.
_TOKEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)([^<>]*)>|([^<]+)|<")
_ROOM_MENTION = re.compile(r"@(room)\b", re.IGNORECASE)
_WORD_JOINER = "\u2060"


def _neutralise(text: str) -> str:
    """`@room` with an invisible word joiner after "@", so no client or push rule sees a room ping."""
    return _ROOM_MENTION.sub("@" + _WORD_JOINER + r"\1", text)


_BLOCK_TAGS = frozenset(
    {
        "p", "div", "blockquote", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table",
        "tr", "hr", "details", "summary",
    }
)  # fmt: skip
_PARAGRAPH_TAGS = frozenset(
    {"p", "blockquote", "pre", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "hr"}
)
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_PRE_SPACE = "\x00"  # marks a line that came from <pre>; control characters never reach the builder
_MANY_NEWLINES = re.compile(r"\n{3,}")


class _TextBuilder:
    """Lays text out the way a browser would: <br> and blocks become line breaks, <pre> keeps spaces.

    Line breaks are kept apart from the text (a list of lines), so no placeholder character is needed.
    """

    def __init__(self) -> None:
        self._lines: list[list[str]] = [[]]
        self._pre_depth = 0

    def _newlines(self, count: int) -> None:
        for _ in range(count):
            self._lines.append([])

    def tag(self, name: str, *, closing: bool) -> None:
        name = name.lower()
        if name == "br" and not closing:
            self._newlines(1)
        elif name == "li" and not closing:
            self._newlines(1)
            self._lines[-1].append("• ")
        elif name in ("td", "th") and not closing:
            self._lines[-1].append(" ")
        elif name in _BLOCK_TAGS:
            self._newlines(2 if name in _PARAGRAPH_TAGS else 1)
            if name == "pre":
                self._pre_depth = max(0, self._pre_depth + (-1 if closing else 1))

    def data(self, text: str) -> None:
        if not self._pre_depth:
            self._lines[-1].append(_HTML_SPACE.sub(" ", text))
            return
        first, *rest = text.replace("\t", " ").split("\n")
        self._lines[-1].append(_PRE_SPACE + first if first else "")
        for line in rest:
            self._lines.append([_PRE_SPACE + line])

    def result(self) -> str:
        lines = []
        for parts in self._lines:
            line = "".join(parts)
            if _PRE_SPACE in line:  # inside <pre>: keep its spaces, only trim the line's end
                lines.append(line.replace(_PRE_SPACE, "").rstrip())
            else:
                lines.append(_SPACE_RUN.sub(" ", line).strip())
        return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()
