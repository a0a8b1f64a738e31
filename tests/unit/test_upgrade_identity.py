"""Whether the account a new token belongs to is the stored account an `allow-actions` upgrade is for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.connect import same_account
from bot.fediverse.instance import parse_instance
from bot.fediverse.models import FediverseAccount, RemoteAccountId
from bot.store.models import AccountState
from bot.store.records import AccountId, AccountRecord, AppId

INSTANCE = parse_instance("https://example.org", allow_http=False)
WHEN = datetime(2026, 12, 1, tzinfo=UTC)
STORED = AccountRecord(
    id=AccountId(1),
    matrix_user_id="@alice:hs.test",
    instance=INSTANCE.key,
    app_id=AppId(1),
    fediverse_account_id="01ALICE",
    acct="me@example.org",
    token="t",
    scopes="read",
    cursor=None,
    state=AccountState.ACTIVE,
    notify_types=None,
    created_at=WHEN,
    updated_at=WHEN,
)


def signed_in(remote_id: str, acct: str) -> FediverseAccount:
    return FediverseAccount(RemoteAccountId(remote_id), acct.split("@")[0], acct, None, "")


@pytest.mark.parametrize(
    ("instance", "remote_id", "acct", "same"),
    [
        ("https://example.org", "01ALICE", "me@example.org", True),
        ("https://example.org", "01ALICE", "Me@Example.org", True),  # accts compare without case
        ("https://example.org", "01BOB", "bob@example.org", False),
        ("https://example.org", "01BOB", "me@example.org", False),  # same name, another account
        ("https://example.org", "01ALICE", "bob@example.org", False),
        ("https://other.example", "01ALICE", "me@example.org", False),  # ids are per instance
    ],
)
def test_same_account(instance: str, remote_id: str, acct: str, same: bool) -> None:
    ref = parse_instance(instance, allow_http=False)
    assert same_account(STORED, ref, signed_in(remote_id, acct)) is same
