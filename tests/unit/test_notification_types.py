"""The one list of notification types: what `notify` accepts, what the metrics label, what is worded."""

from __future__ import annotations

import re

import pytest

from bot.accounts import parse_types
from bot.errors import CommandError
from bot.fediverse.notification_types import (
    FALLBACK_WORDS,
    NOTIFICATION_TYPES,
    TYPE_NAMES,
    NotificationType,
    type_named,
)
from bot.observability.metrics import KNOWN_NOTIFICATION_TYPES

NEWER = (
    "severed_relationships",
    "moderation_warning",
    "quote",
    "quoted_update",
    "annual_report",
    "move",
    "pleroma:emoji_reaction",
    "reaction",
    "bite",
)


@pytest.mark.parametrize("name", NEWER)
def test_the_newer_types_can_be_chosen_in_notify(name: str) -> None:
    assert parse_types([name]) == (name,)
    assert name in KNOWN_NOTIFICATION_TYPES


def test_notify_lists_every_type_when_one_is_unknown() -> None:
    with pytest.raises(CommandError) as info:
        parse_types(["mention", "nonsense"])
    assert "'nonsense'" in str(info.value)
    assert all(name in str(info.value) for name in TYPE_NAMES)


def test_names_are_unique_and_looked_up() -> None:
    assert len(set(TYPE_NAMES)) == len(NOTIFICATION_TYPES)
    assert type_named("pleroma:emoji_reaction") is not None
    assert type_named("emoji_reaction") is None
    assert type_named(None) is None


@pytest.mark.parametrize("kind", NOTIFICATION_TYPES, ids=lambda t: t.name)
def test_words_only_name_parts_the_formatter_fills(kind: NotificationType) -> None:
    for template in (kind.singular, kind.plural):
        assert set(re.findall(r"\{([a-z_]+)\}", template)) <= set(FALLBACK_WORDS)
