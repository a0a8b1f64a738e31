"""A relay worker's fair share of the accounts (pure)."""

from __future__ import annotations

import pytest

from bot.relay.lease_keeper import fair_share


@pytest.mark.parametrize(
    ("accounts", "workers", "share"),
    [(10, 0, 10), (10, 1, 10), (10, 3, 4), (10, 10, 1), (10, 11, 1), (0, 3, 0), (10_000, 3, 3334)],
)
def test_fair_share_is_the_rounded_up_split(accounts: int, workers: int, share: int) -> None:
    assert fair_share(accounts, workers) == share
