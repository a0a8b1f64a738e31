"""What a Matrix reaction, redaction or reply to a relayed message asks the bot to do, and whether it may.
Pure: plain values in, plain values out.

Gating (`gate`): only the Matrix user who owns the account, only in their DM, only on messages the bot
relayed there (the event map). Anything else is ignored without a word; an account whose token cannot
write gets one hint and no server call.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from bot.store.action_journal import ActionKind
from bot.store.event_map import RelayedEventRecord, RelayedTarget

__all__ = [
    "DEFAULT_BOOST_KEYS",
    "DEFAULT_FAVOURITE_KEYS",
    "Gate",
    "ReactionKeys",
    "gate",
    "idempotency_key",
    "normalize_key",
    "reaction_intent",
    "reply_intent",
    "undo_of",
]

DEFAULT_FAVOURITE_KEYS = ("⭐", "❤️", "👍")
DEFAULT_BOOST_KEYS = ("🔁",)
_ACCEPT_KEYS = ("✅",)
_REJECT_KEYS = ("❌",)
_VARIATION_SELECTORS = str.maketrans("", "", "\ufe0e\ufe0f")


def normalize_key(key: str) -> str:
    """A reaction key without emoji variation selectors: clients send ❤ and ❤️, ⭐ and ⭐️ alike."""
    return key.translate(_VARIATION_SELECTORS).strip()


@dataclass(frozen=True)
class ReactionKeys:
    """Which reaction keys favourite and which boost (configurable); ✅/❌ answer follow requests."""

    favourite: frozenset[str]
    boost: frozenset[str]

    @classmethod
    def of(cls, favourite: tuple[str, ...], boost: tuple[str, ...]) -> ReactionKeys:
        return cls(frozenset(map(normalize_key, favourite)), frozenset(map(normalize_key, boost)))


DEFAULT_KEYS = ReactionKeys.of(DEFAULT_FAVOURITE_KEYS, DEFAULT_BOOST_KEYS)


def reaction_intent(key: str, target: RelayedTarget, keys: ReactionKeys) -> ActionKind | None:
    """The action a reaction with `key` on a message showing `target` asks for; None: not an action."""
    key = normalize_key(key)
    if target.requester_account_id is not None:
        if key in map(normalize_key, _ACCEPT_KEYS):
            return ActionKind.AUTHORIZE
        if key in map(normalize_key, _REJECT_KEYS):
            return ActionKind.REJECT
        return None
    if target.status_id is None:
        return None
    if key in keys.favourite:
        return ActionKind.FAVOURITE
    if key in keys.boost:
        return ActionKind.REBLOG
    return None


def reply_intent(text: str, target: RelayedTarget) -> ActionKind | None:
    """A Matrix reply with `text` to a message showing `target`: `accept`/`reject` answer a follow
    request; anything else replies to the status. None: nothing to do (a follow request answered with
    other words, or a notification without a status)."""
    if target.requester_account_id is not None:
        word = text.strip().lower().rstrip(".!")
        return {"accept": ActionKind.AUTHORIZE, "reject": ActionKind.REJECT}.get(word)
    if target.status_id is None or not text.strip():
        return None
    return ActionKind.REPLY


_UNDO = {ActionKind.FAVOURITE: ActionKind.UNFAVOURITE, ActionKind.REBLOG: ActionKind.UNREBLOG}


def undo_of(action: ActionKind) -> ActionKind | None:
    """What removing a reaction that did `action` does: unfavourite, unboost; None for the rest."""
    return _UNDO.get(action)


def idempotency_key(event_id: str) -> str:
    """The server-side idempotency key of the action a Matrix event asked for: the same on every replay
    of that event, and no Matrix id is sent to the fediverse server."""
    return hashlib.sha256(b"gts-bot action\0" + event_id.encode()).hexdigest()[:32]


class Gate(enum.Enum):
    IGNORE = "ignore"  # not ours to act on: say nothing
    HINT = "hint"  # the account cannot write: one short hint, no server call
    ACT = "act"


def gate(
    *,
    sender: str,
    room_id: str,
    dm_room_id: str | None,
    mapped: RelayedEventRecord | None,
    account_owner: str | None,
    account_can_act: bool,
) -> Gate:
    """Whether `sender`, acting in `room_id` on the relayed message `mapped`, may act.

    `dm_room_id` is the sender's DM with the bot; `account_owner` the Matrix user of the account the
    message was relayed for (None: the account is gone).
    """
    if mapped is None or dm_room_id is None or room_id != dm_room_id:
        return Gate.IGNORE
    if mapped.matrix_user_id != sender or mapped.room_id != room_id or account_owner != sender:
        return Gate.IGNORE
    return Gate.ACT if account_can_act else Gate.HINT
