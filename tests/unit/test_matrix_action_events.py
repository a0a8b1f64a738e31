"""Reactions, redactions and replies as the sync hands them over (plain and decrypted sources). Pure."""

from __future__ import annotations

from typing import Any

import pytest

from bot.matrix.events import message_from_source, reaction_from_source, redaction_from_source
from bot.matrix.types import EventId, Reaction, Redaction, RoomId, UserId

ROOM = RoomId("!dm:hs")


def _reaction(relates: object, **extra: Any) -> dict[str, Any]:
    return {
        "type": "m.reaction",
        "event_id": "$r",
        "sender": "@alice:hs",
        "content": {"m.relates_to": relates},
        **extra,
    }


def test_a_reaction_annotation() -> None:
    source = _reaction({"rel_type": "m.annotation", "event_id": "$msg", "key": "⭐"})
    assert reaction_from_source(ROOM, source) == Reaction(
        ROOM, EventId("$r"), UserId("@alice:hs"), EventId("$msg"), "⭐"
    )


@pytest.mark.parametrize(
    "relates",
    [
        {"rel_type": "m.replace", "event_id": "$msg", "key": "⭐"},
        {"rel_type": "m.annotation", "event_id": "$msg"},
        {"rel_type": "m.annotation", "key": "⭐"},
        {"rel_type": "m.annotation", "event_id": 5, "key": "⭐"},
        "nonsense",
    ],
)
def test_malformed_reactions_are_dropped(relates: object) -> None:
    assert reaction_from_source(ROOM, _reaction(relates)) is None


def test_a_long_reaction_key_is_cut() -> None:
    source = _reaction({"rel_type": "m.annotation", "event_id": "$msg", "key": "x" * 10_000})
    reaction = reaction_from_source(ROOM, source)
    assert reaction is not None
    assert len(reaction.key) == 64


@pytest.mark.parametrize(
    "source",
    [
        {"type": "m.room.redaction", "event_id": "$x", "sender": "@a:hs", "redacts": "$r", "content": {}},
        {"type": "m.room.redaction", "event_id": "$x", "sender": "@a:hs", "content": {"redacts": "$r"}},
    ],
    ids=["before-v11", "v11"],
)
def test_a_redaction_in_either_room_version(source: dict[str, Any]) -> None:
    assert redaction_from_source(ROOM, source) == Redaction(
        ROOM, EventId("$x"), UserId("@a:hs"), EventId("$r")
    )


def _message(relates: object) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "event_id": "$m",
        "sender": "@alice:hs",
        "content": {"msgtype": "m.text", "body": "> <@bot:hs> x\n\nhi", "m.relates_to": relates},
    }


def test_a_reply_names_the_event_it_answers() -> None:
    message = message_from_source(ROOM, _message({"m.in_reply_to": {"event_id": "$relayed"}}), encrypted=True)
    assert message is not None
    assert message.reply_to == "$relayed"


def test_a_thread_message_whose_reply_is_only_a_fallback_is_no_reply() -> None:
    relates = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True,
               "m.in_reply_to": {"event_id": "$last"}}  # fmt: skip
    message = message_from_source(ROOM, _message(relates), encrypted=False)
    assert message is not None
    assert message.reply_to is None


def test_an_edit_of_a_reply_is_ignored() -> None:
    relates = {"rel_type": "m.replace", "event_id": "$m0"}
    assert message_from_source(ROOM, _message(relates), encrypted=False) is None
