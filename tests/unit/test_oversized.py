"""Reading the first notification's id from the start of a page too large to parse (issue 10)."""

from __future__ import annotations

import pytest

from bot.fediverse.oversized import first_item_id

BIG = "x" * 5000


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        # GoToSocial and Mastodon write the id first
        (f'[{{"id":"01HN3","type":"mention","account":{{"id":"ACC","note":"{BIG}', "01HN3"),
        # Akkoma writes keys in order: the account (with its own id) comes before the notification's id
        (f'[ {{ "account" : {{"id":"ACC","note":"{BIG}"}}, "created_at":"2026", "id" : "N1", "status"', "N1"),
        # quotes and braces inside strings are not structure
        ('[{"account":{"display_name":"a \\"id\\":\\"evil\\" {[ b"},"id":"N2","type":"x"}', "N2"),
        # "id" as a value is not the key
        ('[{"type":"id","id":"7"}]', "7"),
    ],
)
def test_the_first_notifications_id_is_found_whatever_the_key_order(prefix: str, expected: str) -> None:
    assert first_item_id(prefix.encode()) == expected


@pytest.mark.parametrize(
    "prefix",
    [
        f'[{{"account":{{"id":"ACC","note":"{BIG}',  # cut inside a string before the id
        "[]",
        '[{"type":"follow"},{"id":"2"}]',  # the first item has no id: the second's is not taken
        '{"id":"1"}',  # not an array
        '[{"id":"../../etc"}]',  # not an id the bot would use as a cursor
        '[{"id":12}]',
        "",
    ],
)
def test_no_id_is_made_up(prefix: str) -> None:
    assert first_item_id(prefix.encode()) is None


def test_bytes_that_are_not_utf8_give_no_id() -> None:
    assert first_item_id(b'[{"id":"\xff\xfe"}]') is None
