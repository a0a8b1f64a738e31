"""The pure core of acting from Matrix: what a reaction or reply asks for, the gate, keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.actions.intents import (
    DEFAULT_KEYS,
    Gate,
    ReactionKeys,
    gate,
    idempotency_key,
    normalize_key,
    reaction_intent,
    reply_intent,
    undo_of,
)
from bot.store.action_journal import ActionKind
from bot.store.event_map import RelayedEventRecord, RelayedTarget
from bot.store.records import AccountId

T0 = datetime(2026, 12, 1, tzinfo=UTC)
MENTION = RelayedTarget(AccountId(1), "n1", "mention", status_id="s1")
FOLLOW_REQUEST = RelayedTarget(AccountId(1), "n2", "follow_request", requester_account_id="a9")
FOLLOW = RelayedTarget(AccountId(1), "n3", "follow")  # nothing to act on


@pytest.mark.parametrize(
    ("key", "target", "expected"),
    [
        ("⭐", MENTION, ActionKind.FAVOURITE),
        ("⭐\ufe0f", MENTION, ActionKind.FAVOURITE),
        ("❤️", MENTION, ActionKind.FAVOURITE),
        ("❤", MENTION, ActionKind.FAVOURITE),
        ("👍", MENTION, ActionKind.FAVOURITE),
        ("🔁", MENTION, ActionKind.REBLOG),
        ("😂", MENTION, None),
        ("✅", MENTION, None),
        ("✅", FOLLOW_REQUEST, ActionKind.AUTHORIZE),
        ("❌", FOLLOW_REQUEST, ActionKind.REJECT),
        ("⭐", FOLLOW_REQUEST, None),
        ("⭐", FOLLOW, None),
    ],
)
def test_reaction_intent(key: str, target: RelayedTarget, expected: ActionKind | None) -> None:
    assert reaction_intent(key, target, DEFAULT_KEYS) == expected


def test_reaction_keys_are_configurable() -> None:
    keys = ReactionKeys.of(("🌟",), ("♻️",))
    assert reaction_intent("🌟", MENTION, keys) is ActionKind.FAVOURITE
    assert reaction_intent("♻", MENTION, keys) is ActionKind.REBLOG
    assert reaction_intent("⭐", MENTION, keys) is None


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        ("sounds good", MENTION, ActionKind.REPLY),
        ("   ", MENTION, None),
        ("accept", FOLLOW_REQUEST, ActionKind.AUTHORIZE),
        ("Accept!", FOLLOW_REQUEST, ActionKind.AUTHORIZE),
        (" reject ", FOLLOW_REQUEST, ActionKind.REJECT),
        ("who are you?", FOLLOW_REQUEST, None),
        ("hello", FOLLOW, None),
    ],
)
def test_reply_intent(text: str, target: RelayedTarget, expected: ActionKind | None) -> None:
    assert reply_intent(text, target) == expected


def test_only_favourites_and_boosts_are_undone() -> None:
    assert undo_of(ActionKind.FAVOURITE) is ActionKind.UNFAVOURITE
    assert undo_of(ActionKind.REBLOG) is ActionKind.UNREBLOG
    assert undo_of(ActionKind.REPLY) is None
    assert undo_of(ActionKind.AUTHORIZE) is None


def test_normalize_key_drops_variation_selectors() -> None:
    assert normalize_key("❤️") == normalize_key("❤") == "❤"


def test_idempotency_key_is_stable_per_event_and_hides_the_event_id() -> None:
    assert idempotency_key("$abc") == idempotency_key("$abc")
    assert idempotency_key("$abc") != idempotency_key("$abd")
    assert "abc" not in idempotency_key("$abc")
    assert len(idempotency_key("$abc")) == 32


ALICE, EVE, DM, OTHER = "@alice:hs", "@eve:hs", "!dm:hs", "!other:hs"
MAPPED = RelayedEventRecord("$relayed", ALICE, DM, MENTION, T0)


@pytest.mark.parametrize(
    ("sender", "room", "dm", "mapped", "owner", "can_act", "expected"),
    [
        (ALICE, DM, DM, MAPPED, ALICE, True, Gate.ACT),
        (ALICE, DM, DM, MAPPED, ALICE, False, Gate.HINT),
        (EVE, DM, None, MAPPED, ALICE, True, Gate.IGNORE),  # someone else in the room
        (EVE, DM, DM, MAPPED, ALICE, True, Gate.IGNORE),  # even if the room were theirs too
        (ALICE, OTHER, DM, MAPPED, ALICE, True, Gate.IGNORE),  # not in the DM
        (ALICE, DM, None, MAPPED, ALICE, True, Gate.IGNORE),  # no DM on record
        (ALICE, DM, DM, None, ALICE, True, Gate.IGNORE),  # not a relayed message
        (ALICE, DM, DM, MAPPED, None, True, Gate.IGNORE),  # the account is gone
        (ALICE, DM, DM, MAPPED, EVE, True, Gate.IGNORE),  # the account is someone else's
        (ALICE, OTHER, OTHER, MAPPED, ALICE, True, Gate.IGNORE),  # relayed into an older DM
    ],
)
def test_gate(
    sender: str,
    room: str,
    dm: str | None,
    mapped: RelayedEventRecord | None,
    owner: str | None,
    can_act: bool,
    expected: Gate,
) -> None:
    verdict = gate(
        sender=sender,
        room_id=room,
        dm_room_id=dm,
        mapped=mapped,
        account_owner=owner,
        account_can_act=can_act,
    )
    assert verdict is expected
