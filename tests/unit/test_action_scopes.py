"""Which scopes acting needs, per server, decided from the stored scopes alone (pure)."""

from __future__ import annotations

import pytest

from bot.fediverse.scopes import action_scopes, can_act, scopes_cover

LEAST = "write:favourites write:follows write:statuses"


@pytest.mark.parametrize(
    "software", ["gotosocial", "mastodon", "akkoma", "pleroma", "iceshrimp.net", None, "unknown"]
)
def test_action_scopes_are_the_three_granular_write_scopes(software: str | None) -> None:
    assert action_scopes(software) == frozenset(LEAST.split())
    assert can_act(action_scopes(software), software)


@pytest.mark.parametrize(
    ("granted", "software", "expected"),
    [
        ("read", "gotosocial", False),
        ("read", "mastodon", False),
        ("read write", "gotosocial", True),
        ("read write", "mastodon", True),
        ("read " + LEAST, "akkoma", True),
        ("read write:statuses write:favourites", "gotosocial", False),  # no follow requests
        ("read write:statuses write:favourites follow", "mastodon", True),  # legacy `follow` counts there
        ("read write:statuses write:favourites follow", "akkoma", True),
        ("read write:statuses write:favourites follow", "iceshrimp.net", True),  # ExpandScopes("follow")
        ("read write:statuses write:favourites follow", "gotosocial", False),  # GoToSocial has no `follow`
        ("write:statuses write:follows", "mastodon", False),  # no favourites
        ("", "gotosocial", False),
    ],
)
def test_can_act(granted: str, software: str, expected: bool) -> None:
    assert can_act(granted, software) is expected


def test_can_act_takes_a_list_too() -> None:
    assert can_act(["read", "write"], "gotosocial")
    assert not can_act(["read"], "gotosocial")


def test_relay_scopes_plus_action_scopes_still_relay() -> None:
    assert scopes_cover(["read", *sorted(action_scopes("gotosocial"))], ["read:notifications"])
