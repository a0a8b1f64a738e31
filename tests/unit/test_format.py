from __future__ import annotations

import random
from typing import Any

import pytest

from bot.fediverse.models import ShapeError, parse_account, parse_notification
from bot.fediverse.notification_types import NOTIFICATION_TYPES, type_named
from bot.relay import format as format_module
from bot.relay.format import COULD_NOT_SHOW, CW_HIDDEN, Message, actor_of, could_not_show, format_notification
from bot.relay.grouping import Pending, group_notifications

INSTANCE = "example.org"
POST_URL = "https://example.org/@alice/statuses/01M8G20ENXWW8161BY3JGRTY9T"


def account(**over: Any) -> dict[str, Any]:
    acc: dict[str, Any] = {
        "id": "01ACC",
        "username": "bob",
        "acct": "bob@remote.example",
        "display_name": "Bob",
        "url": "https://remote.example/@bob",
    }
    acc.update(over)
    return acc


def status(**over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "id": "01STATUS",
        "content": "<p>Hello <b>world</b></p>",
        "spoiler_text": "",
        "url": POST_URL,
        "uri": "https://example.org/users/alice/statuses/01M8G20ENXWW8161BY3JGRTY9T",
        "media_attachments": [],
        "account": account(
            username="alice", acct="alice", display_name="Alice", url="https://example.org/@alice"
        ),
    }
    st.update(over)
    return st


def notif(n_type: Any, **over: Any) -> dict[str, Any]:
    n: dict[str, Any] = {
        "id": "01M8G20ENXWW8161BY3JGRTY9T",
        "type": n_type,
        "created_at": "2026-11-28T03:08:32.000Z",
        "account": account(),
    }
    if type_named(n_type) is None or type_named(n_type).status != "none":  # type: ignore[union-attr]
        n["status"] = status()
    n.update(over)
    return n


def fmt(n: dict[str, Any], **kw: Any) -> Message:
    return format_notification(parse_notification(n), instance_display=INSTANCE, **kw)


BOB = "Bob (@bob@remote.example)"
BOB_HTML = '<a href="https://remote.example/@bob">Bob</a> (@bob@remote.example)'
BODY = f"Hello world\n{POST_URL}"


@pytest.mark.parametrize(
    ("n_type", "expected"),
    [
        ("mention", f"{BOB} mentioned you:\n{BODY}"),
        ("status", f"{BOB} posted:\n{BODY}"),
        ("reblog", f"{BOB} boosted your post:\n{BODY}"),
        ("favourite", f"{BOB} favourited your post:\n{BODY}"),
        ("follow", f"{BOB} followed you"),
        ("follow_request", f"{BOB} asked to follow you"),
        ("poll", f"A poll you voted in or created has ended:\n{BODY}"),
        ("update", f"{BOB} edited a post you interacted with:\n{BODY}"),
        ("admin.sign_up", f"New sign-up: {BOB}"),
        ("admin.report", f"New report from {BOB}"),
        ("pending.favourite", f"{BOB} wants to favourite your post (needs your approval):\n{BODY}"),
        ("pending.reply", f"{BOB} replied to your post (the reply needs your approval):\n{BODY}"),
        ("pending.reblog", f"{BOB} wants to boost your post (needs your approval):\n{BODY}"),
        ("quote", f"{BOB} quoted your post:\n{BODY}"),
        ("quoted_update", f"{BOB} edited a post that quotes yours:\n{BODY}"),
        ("pleroma:emoji_reaction", f"{BOB} reacted with an emoji to your post:\n{BODY}"),
        ("reaction", f"{BOB} reacted with an emoji to your post:\n{BODY}"),
        ("bite", f"{BOB} bit you"),
        ("move", f"{BOB} moved to a new account"),
        (
            "severed_relationships",
            "A moderation action cut some of your follow relationships with another server",
        ),
        ("moderation_warning", "Your instance's moderators sent you a notice: a warning"),
        ("annual_report", "Your annual report for this year is ready"),
        ("emoji_reaction", f"New notification of type emoji_reaction from {BOB}"),
    ],
)
def test_plain_text_per_type(n_type: Any, expected: str) -> None:
    message = fmt(notif(n_type))
    assert message.plain == expected
    assert message.covers == ("01M8G20ENXWW8161BY3JGRTY9T",)


@pytest.mark.parametrize(
    ("n_type", "expected"),
    [
        (
            "mention",
            f"{BOB_HTML} mentioned you:<blockquote><p>Hello <b>world</b></p></blockquote>"
            f'<a href="{POST_URL}">Open post</a>',
        ),
        ("follow", f"{BOB_HTML} followed you"),
        ("admin.sign_up", f"New sign-up: {BOB_HTML}"),
        (
            "quote",
            f"{BOB_HTML} quoted your post:<blockquote><p>Hello <b>world</b></p></blockquote>"
            f'<a href="{POST_URL}">Open post</a>',
        ),
        ("emoji_reaction", f"New notification of type emoji_reaction from {BOB_HTML}"),
    ],
)
def test_html_per_type(n_type: str, expected: str) -> None:
    assert fmt(notif(n_type)).html == expected


def test_local_account_gets_instance_domain() -> None:
    local = account(username="carol", acct="carol", display_name="Carol", url="https://example.org/@carol")
    assert fmt(notif("follow", account=local)).plain == "Carol (@carol@example.org) followed you"


def test_display_name_falls_back_to_username() -> None:
    assert (
        fmt(notif("follow", account=account(display_name=""))).plain
        == "bob (@bob@remote.example) followed you"
    )


def test_account_label_prefix_is_escaped() -> None:
    message = fmt(notif("follow"), account_label="me@<b>x</b>")
    assert message.plain == f"[me@<b>x</b>] {BOB} followed you"
    assert message.html.startswith("[me@&lt;b&gt;x&lt;/b&gt;] ")


def test_poll_results_are_listed() -> None:
    poll = {
        "options": [{"title": "Yes", "votes_count": 3}, {"title": "No", "votes_count": 1}, {"title": "?!"}]
    }
    message = fmt(notif("poll", status=status(poll=poll)))
    assert message.plain == (
        "A poll you voted in or created has ended:\nHello world\n"
        f"• Yes: 3 votes\n• No: 1 vote\n• ?!\n{POST_URL}"
    )


def test_attachments_are_counted() -> None:
    message = fmt(notif("mention", status=status(content="", media_attachments=[{"id": "m1"}, {"id": "m2"}])))
    assert message.plain == f"{BOB} mentioned you:\n[2 attachments]\n{POST_URL}"


def test_empty_status_says_so() -> None:
    assert (
        fmt(notif("mention", status=status(content=""))).plain
        == f"{BOB} mentioned you:\n[no text]\n{POST_URL}"
    )


def test_plaintext_content_keeps_its_lines() -> None:
    message = fmt(notif("mention", status=status(content="line 1\nline 2 & <3")))
    assert message.plain == f"{BOB} mentioned you:\nline 1\nline 2 & <3\n{POST_URL}"
    assert "line 1<br>line 2 &amp; &lt;3" in message.html


def test_status_uri_used_when_url_missing() -> None:
    message = fmt(notif("mention", status=status(url=None)))
    assert message.plain.endswith("\nhttps://example.org/users/alice/statuses/01M8G20ENXWW8161BY3JGRTY9T")


def test_report_names_its_target_when_given() -> None:
    report = {"id": "r1", "target_account": account(username="eve", acct="eve", display_name="Eve", url=None)}
    assert (
        fmt(notif("admin.report", report=report)).plain
        == f"New report from {BOB} about Eve (@eve@example.org)"
    )


def test_followed_account_boosting_shows_the_original_author() -> None:
    inner = status(content="<p>boosted text</p>")
    message = fmt(notif("status", status=status(content="", reblog=inner)))
    assert message.plain == f"{BOB} boosted a post by Alice (@alice@example.org):\nboosted text\n{POST_URL}"


# --- content warnings -------------------------------------------------------------------------------


def test_content_warning_hides_content_in_plain_and_spoilers_html() -> None:
    message = fmt(notif("mention", status=status(spoiler_text='spiders "big"', content="<p>secret</p>")))
    assert message.plain == f'{BOB} mentioned you:\nCW: spiders "big"\n{CW_HIDDEN}\n{POST_URL}'
    assert "secret" not in message.plain
    assert (
        "<b>CW:</b> spiders &quot;big&quot;<br>"
        '<span data-mx-spoiler="spiders &quot;big&quot;"><p>secret</p></span>' in message.html
    )


def test_nested_spoiler_in_remote_content_stays_inside_ours() -> None:
    content = '<p>a <span data-mx-spoiler="inner">b</span></p></span><p>escaped?</p>'
    message = fmt(notif("mention", status=status(spoiler_text="outer", content=content)))
    assert message.html.count("<span") == message.html.count("</span>")
    spoiler_at = message.html.index('data-mx-spoiler="outer"')
    assert message.html.index("escaped?") > spoiler_at
    assert message.html.index("escaped?") < message.html.rindex("</span>")


def test_content_warning_with_html_is_escaped() -> None:
    message = fmt(notif("mention", status=status(spoiler_text='"><img src=x onerror=alert(1)>')))
    assert "<img" not in message.html
    assert 'data-mx-spoiler="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in message.html


# --- hostile input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "forbidden"),
    [
        ("<p>hi<script>alert(1)</script></p>", ["<script", "alert(1)"]),
        ('<p><img src="x" onerror="alert(1)">hi</p>', ["<img", "onerror"]),
        ('<p><a href="javascript:alert(1)">click</a></p>', ["javascript:"]),
        ('<p><a href="data:text/html,x">click</a></p>', ["data:text"]),
        ('<img src="https://tracker.example/pixel.gif" width="1" height="1">', ["tracker.example", "<img"]),
        ('<p style="position:fixed" onmouseover="x()">s</p>', ["style=", "onmouseover"]),
        ("<iframe src='https://evil.example'></iframe>", ["iframe", "evil.example"]),
    ],
)
def test_hostile_content_is_sanitised(content: str, forbidden: list[str]) -> None:
    message = fmt(notif("mention", status=status(content=content)))
    for bad in forbidden:
        assert bad not in message.html
        assert bad not in message.plain


def test_links_in_content_get_rel() -> None:
    message = fmt(notif("mention", status=status(content='<p><a href="https://x.example/">x</a></p>')))
    assert '<a href="https://x.example/" rel="noopener noreferrer">x</a>' in message.html


def test_html_in_display_name_is_escaped() -> None:
    evil = account(display_name='<img src=x onerror="alert(1)"><b>Bob</b>', acct="<i>b</i>@x.example")
    message = fmt(notif("follow", account=evil))
    assert "<img" not in message.html
    assert "<b>" not in message.html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&lt;b&gt;Bob&lt;/b&gt;" in message.html
    assert message.plain == '<img src=x onerror="alert(1)"><b>Bob</b> (@<i>b</i>@x.example) followed you'


def test_bidi_and_control_characters_are_stripped_from_names() -> None:
    evil = account(display_name="Ad\u202emin\u2066\x07\nistrator\u200f", acct="adm\u202ein@x.example")
    message = fmt(notif("follow", account=evil))
    assert message.plain == "Admin istrator (@admin@x.example) followed you"
    for ch in "\u202e\u2066\x07\u200f":
        assert ch not in message.html


def test_long_display_name_is_truncated() -> None:
    message = fmt(notif("follow", account=account(display_name="B" * 5000)))
    assert message.plain == f"{'B' * 99}… (@bob@remote.example) followed you"


def test_huge_content_is_truncated_with_link() -> None:
    content = "<p>" + "word " * 20_000 + "</p>"
    message = fmt(notif("mention", status=status(content=content)))
    text = message.plain.split("\n")[1]
    assert len(text) == 2000
    assert text.endswith("…")
    assert message.plain.endswith(f"\n{POST_URL}")
    assert len(message.html) < 3000
    assert f'<a href="{POST_URL}">Open post</a>' in message.html


def test_huge_excerpt_for_favourite_is_shorter() -> None:
    message = fmt(notif("favourite", status=status(content="x" * 10_000)))
    assert len(message.plain.split("\n")[1]) == 500


def test_content_with_many_tags_falls_back_to_text_html() -> None:
    content = '<ol start="123456"></ol>' * 900 + "<p>short</p>"
    message = fmt(notif("mention", status=status(content=content)))
    assert "<blockquote>short</blockquote>" in message.html


@pytest.mark.parametrize(
    "bad_url",
    ["javascript:alert(1)", "data:text/html,x", "/relative", "https://e.example/\"onclick='x'", 7, None],
)
def test_only_http_links_are_emitted(bad_url: Any) -> None:
    message = fmt(notif("mention", account=account(url=bad_url), status=status(url=bad_url, uri=bad_url)))
    assert "href" not in message.html
    assert "Open post" not in message.html
    assert message.plain == f"{BOB} mentioned you:\nHello world"


# -- shapes the server should not send: the parser refuses them (the client counts them as skipped, so
# the cursor moves on), or what is left is still shown -------------------------------------------------

NO_TYPE_OR_ACCOUNT: list[dict[str, Any]] = [
    {},
    {"type": "follow"},
    {"type": "follow", "account": None},
    {"type": "follow", "account": "bob"},
    {"type": "follow", "account": []},
    {"type": "follow", "account": {"display_name": 5, "username": ["x"]}},
    {"type": "follow", "account": {"acct": "bob"}},
    {"type": "", "account": account()},
    {"type": None, "account": account()},
    {"type": 42, "account": account()},
    {"type": "x" * 500, "account": account()},
    {"type": "mention", "account": account(), "status": ["x"]},
    {"type": "favourite", "account": account(), "status": "01ABC"},
    {"type": "mention", "account": account(), "status": {}},  # a status without an id
]


@pytest.mark.parametrize("garbage", [None, [], "notification", 42, ["type", "mention"]])
def test_a_notification_that_is_not_an_object_is_refused(garbage: Any) -> None:
    with pytest.raises(ShapeError):
        parse_notification(garbage)


@pytest.mark.parametrize("n", NO_TYPE_OR_ACCOUNT)
def test_notifications_without_a_usable_type_account_or_status_are_refused(n: dict[str, Any]) -> None:
    with pytest.raises(ShapeError):
        parse_notification({"id": "01X", "created_at": "2026-11-28T03:08:32.000Z", **n})


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        ({"type": "mention", "account": account()}, f"New notification of type mention from {BOB}"),
        (
            {"type": "mention", "account": account(), "status": None},
            f"New notification of type mention from {BOB}",
        ),
        (
            {
                "type": "mention",
                "account": account(),
                "status": {"id": "s", "content": 5, "spoiler_text": [], "url": {}},
            },
            f"{BOB} mentioned you:\n[no text]",
        ),
        (
            {
                "type": "poll",
                "account": account(),
                "status": {"id": "s", "content": "p", "poll": {"options": "nope"}, "media_attachments": "x"},
            },
            "A poll you voted in or created has ended:\np",
        ),
        (
            {"type": "admin.report", "account": account(), "report": {"target_account": 3}},
            f"New report from {BOB}",
        ),
        ({"type": "x" * 64, "account": account()}, f"New notification of type {'x' * 59}… from {BOB}"),
        (
            {"type": "status", "account": account(), "status": {"id": "s", "reblog": {"id": "r"}}},
            f"{BOB} boosted a post by Someone:\n[no text]",
        ),
        (
            {"type": "status", "account": account(), "status": {"id": "s", "content": "own", "reblog": {}}},
            f"{BOB} posted:\nown",
        ),
    ],
)
def test_malformed_parts_degrade(n: dict[str, Any], expected: str) -> None:
    message = fmt({"id": "01X", "created_at": "2026-11-28T03:08:32.000Z", **n})
    assert message.plain == expected


def _random_value(rng: random.Random, depth: int) -> Any:
    choices: list[Any] = [
        None, True, 0, -1, 1.5, "", "x", "<script>alert(1)</script>", "\u202e\x00\ud800", "javascript:x",
        "https://e.example/", "mention", "favourite", "follow", "poll", "status", [], {},
    ]  # fmt: skip
    if depth < 3 and rng.random() < 0.4:
        keys = [
            "id", "type", "account", "status", "content", "spoiler_text", "url", "uri", "acct", "username",
            "display_name", "poll", "options", "title", "votes_count", "media_attachments", "reblog",
            "report", "target_account", "text", "target", "emoji", "event", "target_name",
        ]  # fmt: skip
        return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 8))}
    if depth < 3 and rng.random() < 0.1:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(choices)


def test_random_garbage_is_refused_or_formatted_never_raises() -> None:
    rng = random.Random(1234)
    formatted = 0
    for _ in range(3000):
        garbage = _random_value(rng, 0)
        n_type = rng.choice(["mention", "status", "poll", "admin.report", "follow", "move"])
        base = notif(n_type)
        n = {**base, **garbage} if isinstance(garbage, dict) else {**base, "status": garbage}
        if rng.random() < 0.5:  # garbage inside a status that is otherwise fine
            n = {**base, "status": {**status(), **(garbage if isinstance(garbage, dict) else {})}}
        try:
            notification = parse_notification(n)
        except ShapeError:
            continue
        message = format_notification(notification, instance_display=INSTANCE)
        formatted += 1
        assert message.plain
        assert "<script" not in message.html
        message.plain.encode("utf-8")  # no lone surrogates
        message.html.encode("utf-8")
    assert formatted > 1000  # most inputs got as far as formatting: the loop tested the formatter


def test_actor_of_strips_at_from_acct() -> None:
    actor = actor_of(
        parse_account(
            {"id": "1", "username": "bob", "acct": "@bob@x.example", "url": "https://x.example/@bob"}
        ),
        instance_display=INSTANCE,
    )
    assert actor.acct == "@bob@x.example"
    assert actor.name == "bob"


# -- types beyond GoToSocial's: each with words of its own ----------------------------------------------


@pytest.mark.parametrize(
    ("n_type", "extra", "expected"),
    [
        ("pleroma:emoji_reaction", {"emoji": "🎉"}, f"{BOB} reacted with 🎉 to your post"),
        ("pleroma:emoji_reaction", {"emoji": ":blobcat:"}, f"{BOB} reacted with :blobcat: to your post"),
        ("reaction", {"emoji": "🎉"}, f"{BOB} reacted with 🎉 to your post"),  # Iceshrimp.NET's name
        (
            "move",
            {"target": account(username="bob2", acct="bob2@new.example", display_name="Bob Two", url=None)},
            f"{BOB} moved to Bob Two (@bob2@new.example)",
        ),
        (
            "severed_relationships",
            {"event": {"type": "domain_block", "target_name": "bad.example", "followers_count": 2}},
            "A moderation action cut some of your follow relationships with bad.example",
        ),
        (
            "moderation_warning",
            {"moderation_warning": {"action": "suspend", "text": "bye"}},
            "Your instance's moderators sent you a notice: your account was suspended",
        ),
        (
            "moderation_warning",
            {"moderation_warning": {"action": "something_new"}},
            "Your instance's moderators sent you a notice: something_new",
        ),
        ("annual_report", {"annual_report": {"year": 2026}}, "Your annual report for 2026 is ready"),
        (
            "annual_report",
            {"annual_report": {"year": "2026<b>"}},
            "Your annual report for this year is ready",
        ),
    ],
)
def test_words_of_the_newer_types(n_type: str, extra: dict[str, Any], expected: str) -> None:
    message = fmt(notif(n_type, **extra))
    assert message.plain.split(":\n", 1)[0] == expected


def test_an_emoji_reaction_cannot_smuggle_markup_or_lines() -> None:
    message = fmt(notif("pleroma:emoji_reaction", emoji="<img src=x>\n" + "x" * 500))
    first_line = message.plain.split("\n", 1)[0]
    assert "<img" not in message.html
    assert len(first_line) < 200


@pytest.mark.parametrize("kind", NOTIFICATION_TYPES, ids=lambda t: t.name)
def test_every_known_type_has_words_of_its_own(kind: Any) -> None:
    message = fmt(notif(kind.name))
    assert "New notification" not in message.plain
    assert "{" not in message.plain


# -- formatting never raises (issue 10, item 2) -----------------------------------------------------------


@pytest.mark.parametrize(
    "content", ["<p><![ ]></p>", "<p><![CDATA[x]]></p>", "<!DOCTYPE x><p>a</p>", "<p><!x y z></p>"]
)
def test_parser_edge_cases_render(content: str) -> None:
    message = fmt(notif("mention", status=status(content=content)))
    assert message.plain.startswith("Bob (@bob@remote.example) mentioned you:")
    assert message.covers == (notif("mention")["id"],)


def _broken_renderer(content: str) -> Any:
    raise AssertionError("a parser bug")


def test_a_renderer_failure_becomes_a_short_line_with_the_post_link(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fault that real input no longer produces (the old parser raised AssertionError on "<![ ]>").
    monkeypatch.setattr(format_module, "render_html", _broken_renderer)
    n = notif("mention", status=status(content="<p>x</p>"))
    message = fmt(n)
    assert message.plain == f"{COULD_NOT_SHOW} ({POST_URL})."
    assert f'<a href="{POST_URL}">{POST_URL}</a>' in message.html
    assert message.covers == (n["id"],)


def test_a_failure_in_one_grouped_notification_keeps_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(format_module, "render_html", _broken_renderer)
    items = [
        Pending(parse_notification(notif("mention", id="01A", status=status(content="<p>x</p>"))), INSTANCE),
        Pending(parse_notification(notif("follow", id="01B")), INSTANCE),
    ]
    messages = group_notifications(items)
    assert [m.covers for m in messages] == [("01A",), ("01B",)]
    assert messages[0].plain.startswith(COULD_NOT_SHOW)
    assert messages[1].plain == "Bob (@bob@remote.example) followed you"


def test_the_short_line_has_no_link_when_none_is_safe() -> None:
    n = notif("mention", account=account(url=None), status=status(url="javascript:x", uri=None))
    message = could_not_show(parse_notification(n), ("01C",))
    assert message == Message(f"{COULD_NOT_SHOW}.", f"{COULD_NOT_SHOW}.", ("01C",))


@pytest.mark.parametrize("field", ["display_name", "username"])
def test_names_never_ping_the_room(field: str) -> None:
    message = fmt(notif("follow", account=account(**{field: "@room"})))
    assert "@room" not in message.plain
    assert "@room" not in message.html
