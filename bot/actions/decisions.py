"""What the action service decides, given what the journal read: which account a `post` names, whether a
redaction undoes something, whether an entry can be resumed, and what the user is told. Pure: plain values
in, plain values out (the server calls and the journal are `service`'s).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.accounts import select_accounts
from bot.actions.intents import Gate, gate, undo_of
from bot.actions.journal import Surroundings
from bot.errors import CommandError
from bot.fediverse.models import PostedStatus, Status
from bot.fediverse.replies import Visibility
from bot.fediverse.scopes import can_act
from bot.relay.sanitize import html_to_text
from bot.rich_text import RichText, join, link
from bot.store.action_journal import ActionKind, ActionRecord, ActionState
from bot.store.event_map import RelayedTarget
from bot.store.records import AccountRecord

__all__ = [
    "FOLLOW_ANSWERS",
    "TARGET_ONLY",
    "Asker",
    "Here",
    "PostRequest",
    "can_act_with",
    "confirmation",
    "is_our_post",
    "parse_post",
    "read_only_hint",
    "resumable",
    "target_id_of",
    "undoing",
    "verdict",
]

FOLLOW_ANSWERS = frozenset({ActionKind.AUTHORIZE, ActionKind.REJECT})
# Actions that only name their target (so a restart can redo them from the journal entry alone).
TARGET_ONLY = FOLLOW_ANSWERS | {
    ActionKind.FAVOURITE,
    ActionKind.UNFAVOURITE,
    ActionKind.REBLOG,
    ActionKind.UNREBLOG,
}


class Asker(Protocol):
    """Who asks for an action, and in which room (a command context, or `Here` at intake)."""

    @property
    def sender(self) -> str: ...

    @property
    def room_id(self) -> str: ...


@dataclass(frozen=True)
class Here:
    """Who acts where, for gating at intake (before there is a command context)."""

    sender: str
    room_id: str


@dataclass(frozen=True)
class PostRequest:
    account: AccountRecord
    visibility: Visibility | None  # None: the account's own default
    text: str


_WORD = re.compile(r"\s*(\S+)")


def parse_post(rest: str, accounts: Sequence[AccountRecord]) -> PostRequest:
    """`[<account>] [public|unlisted|private|direct] <text>` (the text keeps its lines). The first word
    names an account only when it matches one of the user's (a number from `status`, an acct, a host)."""
    position = 0
    chosen: AccountRecord | None = None
    first = _WORD.match(rest, position)
    if first is not None and _may_name_an_account(first.group(1), accounts):
        try:
            chosen = select_accounts(accounts, first.group(1))[0]
            position = first.end()
        except CommandError:
            chosen = None
    if chosen is None:
        chosen = select_accounts(accounts, None)[0]
    visibility = None
    word = _WORD.match(rest, position)
    if word is not None and (asked := Visibility.from_word(word.group(1))) is not None:
        visibility, position = asked, word.end()
    text = rest[position:].strip()
    if not text:
        raise CommandError("What should I post? Write the text after the command.")
    return PostRequest(chosen, visibility, text)


def _may_name_an_account(word: str, accounts: Sequence[AccountRecord]) -> bool:
    """With one account there is nothing to choose: only its own `@user@host` names it, so a post that
    starts with a number or a host name ("1 more day", "example.org is down") keeps its first word."""
    if word.lower() == "all":
        return False
    if len(accounts) == 1:
        return word.lstrip("@").lower() == accounts[0].acct.lower()
    return True


def can_act_with(account: AccountRecord) -> bool:
    return can_act(account.scopes, account.software)


def verdict(asker: Asker, around: Surroundings, *, account_can_act: bool = True) -> Gate:
    """`intents.gate` for `asker` acting on what `around` describes."""
    account = around.account
    return gate(
        sender=asker.sender,
        room_id=asker.room_id,
        dm_room_id=around.dm_room_id,
        mapped=around.mapped,
        account_owner=None if account is None else account.matrix_user_id,
        account_can_act=account_can_act,
    )


def target_id_of(intent: ActionKind, target: RelayedTarget) -> str | None:
    """What `intent` acts on: the requester of a follow request, else the status."""
    return target.requester_account_id if intent in FOLLOW_ANSWERS else target.status_id


def undoing(asker: Asker, around: Surroundings) -> tuple[ActionKind, str, AccountRecord] | None:
    """What a redaction by `asker` takes back: the undoing of the sender's own done favourite or boost
    (its target, the account), when it is in their DM and the account can act; else None."""
    earlier, account = around.earlier, around.account
    if earlier is None or earlier.state is not ActionState.DONE or earlier.matrix_user_id != asker.sender:
        return None
    undo, target_id = undo_of(earlier.action), earlier.target_id
    if undo is None or target_id is None or account is None or around.dm_room_id != asker.room_id:
        return None
    if account.matrix_user_id != asker.sender or not can_act_with(account):
        return None
    return undo, target_id, account


def resumable(entry: ActionRecord) -> bool:
    """Whether a restart can finish `entry` from the journal alone (a reply or post needs its text)."""
    if entry.action in (ActionKind.REPLY, ActionKind.POST):
        return entry.text is not None
    return entry.action in TARGET_ONLY


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


def is_our_post(status: Status, in_reply_to: str | None, text: str) -> bool:
    """Whether `status` is the post an earlier try made: the same reply target, and its text ends with
    what the user wrote (the server adds mentions and markup)."""
    return status.in_reply_to_id == in_reply_to and _plain(html_to_text(status.content)).endswith(
        _plain(text)
    )


def read_only_hint(prefix: str, acct: str) -> RichText:
    return RichText.text(
        f"@{acct} is connected read-only, so I can't act on it. "
        f"To allow replies, favourites, boosts and follow requests from here: "
        f"{prefix} allow-actions {acct}"
    )


_DONE = {
    ActionKind.FAVOURITE: "Favourited",
    ActionKind.UNFAVOURITE: "Removed the favourite",
    ActionKind.REBLOG: "Boosted",
    ActionKind.UNREBLOG: "Undid the boost",
    ActionKind.AUTHORIZE: "Accepted the follow request",
    ActionKind.REJECT: "Rejected the follow request",
    ActionKind.REPLY: "Replied",
    ActionKind.POST: "Posted",
}


def confirmation(action: ActionKind, account: AccountRecord, posted: PostedStatus | None) -> RichText:
    said = f"{_DONE[action]} as @{account.acct}"
    if posted is not None and posted.url:
        return join(RichText.text(said + ": "), link(posted.url))
    return RichText.text(said + ".")
