"""The one builder of plain + HTML pairs: everything it is given is escaped, and both forms say the same."""

from __future__ import annotations

import pytest

from bot.rich_text import RichText, blockquote, bold, bullets, code, join, link, paragraph, spoiler


def test_join_escapes_strings_and_keeps_parts() -> None:
    reply = join("Open ", link("https://e.org/oauth/authorize?a=1&b=2"), " then paste ", code("<code>"))
    assert reply.plain == "Open https://e.org/oauth/authorize?a=1&b=2 then paste <code>"
    assert '<a href="https://e.org/oauth/authorize?a=1&amp;b=2">' in reply.html
    assert "<code>&lt;code&gt;</code>" in reply.html
    assert RichText.text("a <b>\nc").html == "a &lt;b&gt;<br>c"


@pytest.mark.parametrize(
    ("built", "plain", "html"),
    [
        (bold("<x>"), "<x>", "<b>&lt;x&gt;</b>"),
        (
            link('https://e.org/?q="1"', "<me>"),
            '<me> (https://e.org/?q="1")',
            '<a href="https://e.org/?q=&quot;1&quot;">&lt;me&gt;</a>',
        ),
        (
            link("https://e.org/p", "Open post", plain="https://e.org/p"),
            "https://e.org/p",
            '<a href="https://e.org/p">Open post</a>',
        ),
        (
            spoiler('a "cw" <', RichText.text("secret <b>"), plain="[hidden]"),
            "[hidden]",
            '<span data-mx-spoiler="a &quot;cw&quot; &lt;">secret &lt;b&gt;</span>',
        ),
        (blockquote(RichText.text("q & a")), "\nq & a", "<blockquote>q &amp; a</blockquote>"),
        (
            paragraph(RichText.text("Commands:")) + bullets([code("!x"), RichText.text("y")]),
            "Commands:\n  !x\n  y",
            "<p>Commands:</p><ul><li><code>!x</code></li><li>y</li></ul>",
        ),
        (
            RichText.lines([RichText.text("a"), bold("b")]),
            "a\nb",
            "a<br><b>b</b>",
        ),
    ],
)
def test_builders(built: RichText, plain: str, html: str) -> None:
    assert (built.plain, built.html) == (plain, html)
