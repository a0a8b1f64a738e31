from __future__ import annotations

import pytest

from bot.relay.ids import is_newer, max_id, notification_id_key

ULID_OLD = "01M8G1ZZGG5MNJZ5V0EA1WQ872"
ULID_NEW = "01M8G20EPK3KY9X4QDD18S6PTM"


@pytest.mark.parametrize(
    ("candidate", "than", "expected"),
    [
        ("10", "9", True),  # the classic string-compare bug: "10" < "9" as strings
        ("9", "10", False),
        ("100", "99", True),
        ("109", "110", False),
        ("110", "110", False),
        ("007", "7", False),  # same number
        ("8", "007", True),
        ("111111111111111111112", "111111111111111111111", True),  # beyond 64-bit
        (ULID_NEW, ULID_OLD, True),
        (ULID_OLD, ULID_NEW, False),
        (ULID_NEW, ULID_NEW, False),
        (ULID_NEW.lower(), ULID_OLD, True),  # case-insensitive ULIDs
        (ULID_NEW.lower(), ULID_NEW, False),
        ("03578WBmPCWJphPTK4WK7a", "03578WBmPCWJphPTK4WK7Z", True),  # Akkoma flake ids: case matters
        ("03578WBmPCWJphPTK4WK7Z", "03578WBmPCWJphPTK4WK7a", False),
        ("x", None, True),  # no cursor yet: everything is new
        ("10", None, True),
    ],
)
def test_is_newer(candidate: str, than: str | None, expected: bool) -> None:
    assert is_newer(candidate, than) is expected


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["9", "10", "2"], "10"),
        (["99", "100", "98"], "100"),
        ([ULID_OLD, ULID_NEW], ULID_NEW),
        ([ULID_NEW, ULID_OLD], ULID_NEW),
        (["5"], "5"),
        ([], None),
    ],
)
def test_max_id(ids: list[str], expected: str | None) -> None:
    assert max_id(ids) == expected


def test_key_sorts_numeric_ids_as_integers() -> None:
    ids = ["10", "9", "100", "1", "11", "2"]
    assert sorted(ids, key=notification_id_key) == ["1", "2", "9", "10", "11", "100"]


def test_key_is_total_on_a_mixed_set() -> None:
    mixed = [ULID_NEW, "10", "9", ULID_OLD, "", "abc"]
    ordered = sorted(mixed, key=notification_id_key)
    assert ordered[:2] == ["9", "10"]
    assert ordered.index(ULID_OLD) < ordered.index(ULID_NEW)


def test_huge_numeric_id_does_not_raise() -> None:
    # int() refuses strings over 4300 digits; a hostile server must not crash the relay.
    big = "9" * 5000
    assert is_newer(big, "1" + "0" * 4000)
    assert max_id([big, "1"]) == big


def test_non_ascii_digits_are_not_numeric() -> None:
    # "²" is str.isdigit() but not an id digit; it must not be compared as a number.
    assert notification_id_key("²")[0] == 1
