"""The confirmation link of a post comes from the server: only a URL the relay would show is kept."""

from __future__ import annotations

import pytest

from bot.fediverse.models import ShapeError, parse_posted

GOOD = "https://social.example/@alice/statuses/01ABC"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (GOOD, GOOD),
        ("http://127.0.0.1:8080/@alice/statuses/1", "http://127.0.0.1:8080/@alice/statuses/1"),
        ("javascript:alert(1)", None),
        ("data:text/html,<b>hi</b>", None),
        ("/@alice/statuses/1", None),
        ("https://social.example/" + "a" * 5000, None),
        ('https://social.example/"><img src=x>', None),
        (None, None),
        (42, None),
    ],
)
def test_only_a_safe_url_is_kept(url: object, kept: str | None) -> None:
    posted = parse_posted({"id": "01ABC", "url": url})
    assert posted.id == "01ABC"
    assert posted.url == kept


def test_a_status_without_an_id_is_not_a_posted_status() -> None:
    with pytest.raises(ShapeError):
        parse_posted({"url": GOOD})
