from __future__ import annotations

import html
import re

import pytest

from bot.relay import sanitize
from bot.relay.sanitize import (
    MAX_HTML_CHARS,
    MAX_HTML_MARKUP,
    clean_line,
    html_to_text,
    render_html,
    safe_url,
    sanitize_html,
    truncate,
)

# GoToSocial's own rendering of a post with a mention, a hashtag, a link and two paragraphs.
GTS_HTML = (
    '<p>hi <span class="h-card"><a href="https://example.org/@alice" class="u-url mention" rel="nofollow '
    'noreferrer noopener" target="_blank">@<span>alice</span></a></span> see '
    '<a href="https://example.com/x?a=1&amp;b=2" rel="nofollow noreferrer noopener" target="_blank">'
    "https://example.com/x?a=1&amp;b=2</a> "
    '<a href="https://example.org/tags/cats" class="mention hashtag" rel="tag nofollow noreferrer noopener" '
    'target="_blank">#<span>cats</span></a></p><p>second&nbsp;line<br>third &lt;3</p>'
)


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        (GTS_HTML, "hi @alice see https://example.com/x?a=1&b=2 #cats\n\nsecond\xa0line\nthird <3"),
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<p>  lots   of\n spaces </p>", "lots of spaces"),
        ("<ul><li>one</li><li>two</li></ul>", "• one\n• two"),
        ("<pre>keep\n  this</pre>", "keep\n  this"),
        ("x<script>alert(1)</script>y<style>p{}</style>", "xy"),
        ("&amp;&lt;&gt;&quot;&#39;&#x1F600;", "&<>\"'😀"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("<img src=https://t.example/p.gif alt=pixel>text", "text"),
        ("", ""),
        ("a < b and c > d", "a < b and c > d"),
        ("<p>a\x07b\x00c</p>", "abc"),
        # Mastodon hides parts of long link text in spans; the text must still be the whole URL.
        (
            '<a href="https://e.com/long"><span class="invisible">https://</span>'
            '<span class="ellipsis">e.com/lo</span><span class="invisible">ng</span></a>',
            "https://e.com/long",
        ),
    ],
)
def test_html_to_text(fragment: str, expected: str) -> None:
    assert html_to_text(fragment) == expected


@pytest.mark.parametrize(
    ("dirty", "expected"),
    [
        ("<script>alert(1)</script><p>ok</p>", "<p>ok</p>"),
        ('<img src="https://tracker.example/p.gif" onerror="alert(1)">x', "x"),
        ('<p onclick="x()" style="color:red" class="c">t</p>', "<p>t</p>"),
        ('<a href="javascript:alert(1)">j</a>', '<a rel="noopener noreferrer">j</a>'),
        ('<a href="data:text/html,hi">d</a>', '<a rel="noopener noreferrer">d</a>'),
        ('<a href="/relative">r</a>', '<a rel="noopener noreferrer">r</a>'),
        (
            '<a href="https://ok.example/" target="_blank" rel="opener">ok</a>',
            '<a href="https://ok.example/" rel="noopener noreferrer">ok</a>',
        ),
        (
            '<a href="mailto:a@b.example">m</a>',
            '<a href="mailto:a@b.example" rel="noopener noreferrer">m</a>',
        ),
        ('<code class="language-python">x</code>', '<code class="language-python">x</code>'),
        ('<code class="language-py evil">x</code>', "<code>x</code>"),
        ('<code class="hljs">x</code>', "<code>x</code>"),
        ('<span data-mx-spoiler="why">s</span>', '<span data-mx-spoiler="why">s</span>'),
        ('<span data-mx-color="#ff0000">c</span>', '<span data-mx-color="#ff0000">c</span>'),
        ('<span data-mx-color="red;x">c</span>', "<span>c</span>"),
        ('<ol start="3"><li>a</li></ol>', '<ol start="3"><li>a</li></ol>'),
        ('<ol start="-1 onload=x"><li>a</li></ol>', "<ol><li>a</li></ol>"),
        ("<iframe src=https://e.example></iframe>f", "f"),
        ("<form><input name=x>in</form>", "in"),
        ("<!-- comment -->c", "c"),
        ("<details><summary>s</summary>d</details>", "<details><summary>s</summary>d</details>"),
        ("<svg><script>x</script></svg>s", "s"),
        ("a\x00b\x1bc", "abc"),
    ],
)
def test_sanitize_html(dirty: str, expected: str) -> None:
    assert sanitize_html(dirty) == expected


def test_sanitize_keeps_the_matrix_subset() -> None:
    keep = "<blockquote><p><b>b</b><i>i</i><em>e</em><strong>s</strong><del>d</del><u>u</u></p></blockquote>"
    assert sanitize_html(keep) == keep


def test_sanitize_survives_lone_surrogates() -> None:
    assert sanitize_html("a\ud800b") == "ab"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Bob", 100, "Bob"),
        ("  Bob \n Smith\t", 100, "Bob Smith"),
        ("evil\u202eexe.txt", 100, "evilexe.txt"),
        ("\u2066a\u2067b\u2068c\u2069d\u202ae\u202bf\u202cg\u202dh", 100, "abcdefgh"),
        ("zero\u200fwidth\u200emarks", 100, "zerowidthmarks"),
        ("bell\x07null\x00del\x7fc1\x85", 100, "bellnulldelc1"),
        ("line\u2028sep", 100, "line sep"),
        ("x" * 150, 100, "x" * 99 + "…"),
        ("👩\u200d💻 dev", 100, "👩\u200d💻 dev"),  # ZWJ sequences stay intact
        ("", 10, ""),
    ],
)
def test_clean_line(text: str, limit: int, expected: str) -> None:
    assert clean_line(text, limit) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abc", 3, "abc"), ("abcd", 3, "ab…"), ("ab   cd", 4, "ab…"), ("abc", 0, "")],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.org/@bob", "https://example.org/@bob"),
        ("http://127.0.0.1:8080/@bob/statuses/01ABC", "http://127.0.0.1:8080/@bob/statuses/01ABC"),
        ("HTTPS://Example.org/x", "HTTPS://Example.org/x"),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        ("data:text/html;base64,PHNjcmlwdD4=", None),
        ("mailto:a@b.example", None),
        ("ftp://example.org/x", None),
        ("/@bob", None),
        ("//example.org/x", None),
        ("https://", None),
        ("https://exa mple.org/", None),
        ('https://example.org/"onmouseover="x', None),
        ("https://example.org/\u202egnp.exe", None),
        ("https://[::1/", None),
        ("https://example.org/" + "a" * 3000, None),
        ("", None),
        (None, None),
        (42, None),
        (["https://example.org/"], None),
    ],
)
def test_safe_url(value: object, expected: str | None) -> None:
    assert safe_url(value) == expected


# -- hostile HTML: bounded work, one tree for both bodies (issue 10, items 1, 2 and 6) ---------------------

HOSTILE_HTML = [
    "<a" * 20_000,
    "<a" * 80_000,
    "<div>" * 100_000 + "deep",
    "<b>" * 100_000 + "x",
    "<table><tr><td>" * 30_000,
    "<!--" * 50_000,
    "&amp;" * 100_000,
    "<p>" + "x" * 1_000_000 + "</p>",
    "<p><![ ]></p>",
    "<![CDATA[<script>x</script>]]>",
    "<p><b><i>unclosed <a href='https://e.example/'>link",
    "&#0;&#7;&#x202E;&#xD800;&#x110000;&bogus;&amp",
]


@pytest.mark.parametrize("content", HOSTILE_HTML, ids=lambda c: repr(c[:24]))
def test_the_parser_sees_bounded_input(content: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The work is bounded by what reaches the HTML parser: at most MAX_HTML_CHARS characters (plus the
    escapes the cut adds) and at most MAX_HTML_MARKUP "<" that can open an element."""
    seen: list[str] = []
    real = sanitize._cleaner()

    class Recording:
        def clean(self, html: str) -> str:
            seen.append(html)
            return real.clean(html)

    monkeypatch.setattr(sanitize, "_cleaner", Recording)
    result = render_html(content)
    assert len(seen) == 1
    assert seen[0].count("<") <= MAX_HTML_MARKUP
    assert len(seen[0]) <= 4 * MAX_HTML_CHARS
    assert result.html.count("<") <= 3 * MAX_HTML_MARKUP
    assert result.plain == html_to_text(content)
    assert result.html == sanitize_html(content)


def test_deep_nesting_keeps_its_text_and_drops_the_excess_markup() -> None:
    result = render_html("<b>" * 5_000 + "deep" + "</b>" * 5_000)
    assert result.plain == "deep"
    assert result.html.count("<b>") <= MAX_HTML_MARKUP
    assert "deep" in result.html


def test_markup_past_the_budget_is_dropped_not_shown() -> None:
    result = render_html("<i>x</i>" * MAX_HTML_MARKUP + "<p>tail &lt;3 a < b</p>")
    assert result.plain.endswith("tail <3 a < b")
    assert "<p>" not in result.plain


@pytest.mark.parametrize(
    ("content", "plain", "html"),
    [
        ("<p><![ ]></p>", "", "<p></p>"),
        ("<p>a<!-- <b>hidden</b> -->b</p>", "ab", "<p>ab</p>"),
        ("<p>x &lt;script&gt; &#x26; &unknown; y</p>", "x <script> & &unknown; y", None),
        ("<p>a&#7;b&#0;c</p>", "ab\ufffdc", "<p>ab\ufffdc</p>"),
    ],
)
def test_parser_edge_cases(content: str, plain: str, html: str | None) -> None:
    result = render_html(content)
    assert result.plain == plain
    if html is not None:
        assert result.html == html


@pytest.mark.parametrize("tag", ["svg", "math", "iframe", "object", "noembed", "embed", "head", "frameset"])
def test_plain_and_html_drop_the_same_hidden_text(tag: str) -> None:
    result = render_html(f"<p>shown<{tag}><text>hidden words</text></{tag}> too</p>")
    assert "hidden" not in result.plain
    assert "hidden" not in result.html
    assert result.plain == "shown too"


@pytest.mark.parametrize(
    "content",
    [
        "<p>hi <svg><desc>a</desc></svg>b <object>c</object> <math><mi>d</mi></math></p>",
        "<ul><li>one<li>two</ul><pre>  keep\n  me</pre><table><tr><td>x<td>y</table>",
        '<p>a<span class="invisible">b</span><a href="https://e.example/">c</a></p>',
    ],
)
def test_plain_is_the_text_of_the_html(content: str) -> None:
    """Every word of the plain body is in the HTML body and vice versa (one tree makes both)."""
    result = render_html(content)
    text_of_html = html.unescape(re.sub(r"<[^>]*>", "", result.html))
    assert "".join(result.plain.replace("•", "").split()) == "".join(text_of_html.split())


def test_matrix_permalinks_lose_their_link() -> None:
    result = render_html(
        '<p><a href="https://matrix.to/#/@alice:example.org">Alice</a> and '
        '<a href="https://MATRIX.TO./#/!room:example.org">a room</a></p>'
    )
    assert "matrix.to" not in result.html.lower()
    assert result.plain == "Alice and a room"


@pytest.mark.parametrize("content", ["<p>hey @room look</p>", "@ROOM!", "<b>@room</b>"])
def test_room_mentions_are_neutralised(content: str) -> None:
    result = render_html(content)
    assert not re.search(r"@room\b", result.plain, re.IGNORECASE)
    assert not re.search(r"@room\b", result.html, re.IGNORECASE)
    assert "room" in result.plain.lower()
