"""Reply composition and Matrix-to-status text, pure, with plain values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.fediverse.models import FediverseAccount, RemoteAccountId, Status, StatusId
from bot.fediverse.replies import (
    StatusDraft,
    Visibility,
    compose_reply,
    matrix_body_to_status_text,
    reply_mentions,
)

OWN = "alice@example.org"


def status(
    author: str = "bob@remote.example",
    mentions: tuple[str, ...] = (),
    visibility: str = "public",
    spoiler: str = "",
) -> Status:
    account = FediverseAccount(RemoteAccountId("1"), author.split("@")[0], author, None, author)
    return Status(
        id=StatusId("S1"),
        uri=None,
        url=None,
        content="<p>hi</p>",
        spoiler_text=spoiler,
        visibility=visibility,
        sensitive=bool(spoiler),
        created_at=None,
        account=account,
        mentions=mentions,
    )


@pytest.mark.parametrize(
    ("author", "mentions", "expected"),
    [
        ("bob@remote.example", (), ["bob@remote.example"]),
        ("bob@remote.example", ("alice",), ["bob@remote.example"]),  # local form of yourself
        ("bob@remote.example", ("alice@example.org",), ["bob@remote.example"]),
        ("bob@remote.example", ("ALICE@Example.org",), ["bob@remote.example"]),
        ("bob@remote.example", ("alice@other.example",), ["bob@remote.example", "alice@other.example"]),
        ("bob@remote.example", ("carol", "bob@remote.example", "carol"), ["bob@remote.example", "carol"]),
        ("alice", ("carol@x.example",), ["carol@x.example"]),  # replying to your own post
        ("carol", ("dave", "Dave"), ["carol", "dave"]),
    ],
)
def test_reply_mentions_author_first_without_yourself_or_duplicates(
    author: str, mentions: tuple[str, ...], expected: list[str]
) -> None:
    assert reply_mentions(status(author, mentions), OWN) == expected


@pytest.mark.parametrize(
    ("original", "asked", "expected"),
    [
        ("public", None, Visibility.PUBLIC),
        ("unlisted", None, Visibility.UNLISTED),
        ("private", None, Visibility.PRIVATE),
        ("direct", None, Visibility.DIRECT),
        ("direct", Visibility.PUBLIC, Visibility.DIRECT),  # a direct message stays direct
        ("private", Visibility.UNLISTED, Visibility.PRIVATE),
        ("public", Visibility.PRIVATE, Visibility.PRIVATE),  # narrower than the original is fine
        ("mutuals_only", None, Visibility.DIRECT),  # unknown: the one choice never wider
        ("local", Visibility.PUBLIC, Visibility.DIRECT),
    ],
)
def test_reply_visibility_is_never_wider_than_the_original(
    original: str, asked: Visibility | None, expected: Visibility
) -> None:
    draft = compose_reply(status(visibility=original), OWN, "hello", visibility=asked)
    assert draft.visibility is expected


def test_compose_reply_sets_reply_id_mentions_and_carries_the_content_warning() -> None:
    original = status("bob@remote.example", ("carol", "alice"), "private", "spoilers: film")
    assert compose_reply(original, OWN, "  see you there ") == StatusDraft(
        text="@bob@remote.example @carol see you there",
        in_reply_to_id="S1",
        visibility=Visibility.PRIVATE,
        spoiler_text="spoilers: film",
    )


def test_compose_reply_does_not_repeat_mentions_the_text_already_starts_with() -> None:
    draft = compose_reply(status("bob@remote.example", ("carol",)), OWN, "@Carol @bob@remote.example yes")
    assert draft.text == "@Carol @bob@remote.example yes"


def test_visibility_order_and_words() -> None:
    assert Visibility.PUBLIC > Visibility.UNLISTED > Visibility.PRIVATE > Visibility.DIRECT
    assert Visibility.from_word(" Unlisted ") is Visibility.UNLISTED
    assert Visibility.from_word("followers") is None
    assert Visibility.PRIVATE.api_name == "private"


@pytest.mark.parametrize(
    ("body", "formatted", "expected"),
    [
        ("just text", None, "just text"),
        ("> <@bob:example.org> the original\n> second line\n\nmy answer", None, "my answer"),
        ("> a quote I typed myself\n\nmine", None, "> a quote I typed myself\n\nmine"),
        (
            "> <@bob:example.org> x\n\nfallback body",
            '<mx-reply><blockquote><a href="https://matrix.to/#/!r">In reply to</a> x</blockquote>'
            "</mx-reply><p>Hello <b>there</b></p><p>second &amp; last</p>",
            "Hello there\n\nsecond & last",
        ),
        ("ignored", "line one<br>line two", "line one\nline two"),
        ("ignored", '<a href="https://matrix.to/#/@bob:example.org">Bob</a>: hi', "Bob: hi"),
        ("ignored", "<ul><li>one</li><li>two</li></ul>", "• one\n• two"),
        (
            "ignored",
            'see <a href="https://a.example/x?y=1&amp;z=2">the docs</a>',
            "see the docs (https://a.example/x?y=1&z=2)",
        ),
        ("ignored", '<a href="https://a.example/">https://a.example/</a>', "https://a.example/"),
        ("ignored", '<a href="javascript:alert(1)">click</a>', "click"),
    ],
)
def test_matrix_body_to_status_text(body: str, formatted: str | None, expected: str) -> None:
    assert matrix_body_to_status_text(body, formatted) == expected


def test_a_reply_to_a_boost_answers_the_boosted_post() -> None:
    boosted = status("carol@x.example", (), "unlisted", "cw")
    boost = replace(status("bob@remote.example"), id=StatusId("B1"), reblog=boosted)
    draft = compose_reply(boost, OWN, "nice")
    assert draft.in_reply_to_id == "S1"
    assert draft.text == "@carol@x.example nice"
    assert draft.visibility is Visibility.UNLISTED
    assert draft.spoiler_text == "cw"
