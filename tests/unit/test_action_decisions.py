"""The action service's pure decisions (`bot.actions.decisions`), with plain values: which account a
`post` names, what a redaction undoes, what a restart may resume, and what the user is told."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from bot.actions.decisions import (
    Here,
    can_act_with,
    confirmation,
    is_our_post,
    parse_post,
    read_only_hint,
    resumable,
    target_id_of,
    undoing,
    verdict,
)
from bot.actions.intents import Gate
from bot.actions.journal import Surroundings
from bot.errors import CommandError
from bot.fediverse.models import PostedStatus, Status, StatusId
from bot.fediverse.replies import Visibility
from bot.store.action_journal import ActionKind, ActionRecord, ActionState
from bot.store.event_map import RelayedEventRecord, RelayedTarget
from bot.store.records import AccountId, AccountRecord, AccountState, AppId

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ALICE, EVE, DM, GROUP = "@alice:hs", "@eve:hs", "!dm:hs", "!group:hs"
ACT = "read write:statuses write:favourites write:follows"
MENTION = RelayedTarget(AccountId(1), "n1", "mention", status_id="s1")
FOLLOW_REQUEST = RelayedTarget(AccountId(1), "n2", "follow_request", requester_account_id="a9")


def _account(number: int, acct: str) -> AccountRecord:
    return AccountRecord(
        id=AccountId(number),
        matrix_user_id=ALICE,
        instance=f"https://{acct.split('@')[1]}",
        app_id=AppId(1),
        fediverse_account_id=str(number),
        acct=acct,
        token="t",
        scopes="read",
        cursor=None,
        state=AccountState.ACTIVE,
        notify_types=None,
        created_at=T0,
        updated_at=T0,
    )


ONE = [_account(1, "alice@one.example")]
TWO = [*ONE, _account(2, "alice@two.example")]


@pytest.mark.parametrize(
    ("rest", "accounts", "account", "visibility", "text"),
    [
        ("hello world", ONE, 1, None, "hello world"),
        ("private hello", ONE, 1, Visibility.PRIVATE, "hello"),
        ("  DIRECT  line one\nline two ", ONE, 1, Visibility.DIRECT, "line one\nline two"),
        ("@bob hi", ONE, 1, None, "@bob hi"),  # a mention, not an account
        ("alice@two.example unlisted hi", TWO, 2, Visibility.UNLISTED, "hi"),
        ("2 hi", TWO, 2, None, "hi"),
        ("one.example public hi there", TWO, 1, Visibility.PUBLIC, "hi there"),
        ("1 more day", ONE, 1, None, "1 more day"),  # one account: a number is text, not a choice
        ("one.example is down", ONE, 1, None, "one.example is down"),
        ("@alice@one.example hi", ONE, 1, None, "hi"),
    ],
)
def test_parse_post(
    rest: str, accounts: list[AccountRecord], account: int, visibility: Visibility | None, text: str
) -> None:
    request = parse_post(rest, accounts)
    assert request.account.id == account
    assert request.visibility == visibility
    assert request.text == text


@pytest.mark.parametrize(
    ("rest", "accounts", "problem"),
    [
        ("hello", TWO, "several accounts"),
        ("public", ONE, "What should I post"),
        ("alice@one.example", ONE, "What should I post"),
        ("hello", [], "no connected accounts"),
    ],
)
def test_parse_post_refuses(rest: str, accounts: list[AccountRecord], problem: str) -> None:
    with pytest.raises(CommandError, match=problem):
        parse_post(rest, accounts)


WRITER = dataclasses.replace(ONE[0], scopes=ACT)


def _done(action: ActionKind, *, by: str = ALICE, state: ActionState = ActionState.DONE) -> ActionRecord:
    return ActionRecord(
        event_id="$reaction",
        matrix_user_id=by,
        account_id=WRITER.id,
        action=action,
        target_id="s1",
        idempotency_key="k",
        state=state,
        result_id=None,
        result_url=None,
        created_at=T0,
        finished_at=T0,
    )


def _around(
    earlier: ActionRecord | None = None, *, account: AccountRecord | None = WRITER, dm: str | None = DM
) -> Surroundings:
    return Surroundings(dm, RelayedEventRecord("$relayed", ALICE, DM, MENTION, T0), account, earlier)


def test_only_an_account_with_the_action_scopes_can_act() -> None:
    assert can_act_with(WRITER)
    assert not can_act_with(ONE[0])  # read only


@pytest.mark.parametrize(
    ("asker", "around", "can", "expected"),
    [
        (Here(ALICE, DM), _around(), True, Gate.ACT),
        (Here(ALICE, DM), _around(), False, Gate.HINT),
        (Here(ALICE, GROUP), _around(), True, Gate.IGNORE),
        (Here(EVE, DM), _around(), True, Gate.IGNORE),
        (Here(ALICE, DM), _around(account=None), True, Gate.IGNORE),  # the account is gone
        (Here(ALICE, DM), _around(dm=None), True, Gate.IGNORE),  # no DM on record
    ],
)
def test_verdict_reads_the_gate_from_the_surroundings(
    asker: Here, around: Surroundings, can: bool, expected: Gate
) -> None:
    assert verdict(asker, around, account_can_act=can) is expected


@pytest.mark.parametrize(
    ("intent", "target", "expected"),
    [
        (ActionKind.FAVOURITE, MENTION, "s1"),
        (ActionKind.REPLY, MENTION, "s1"),
        (ActionKind.AUTHORIZE, FOLLOW_REQUEST, "a9"),
        (ActionKind.REJECT, FOLLOW_REQUEST, "a9"),
        (ActionKind.REBLOG, FOLLOW_REQUEST, None),  # a follow request has no status
    ],
)
def test_target_id_of(intent: ActionKind, target: RelayedTarget, expected: str | None) -> None:
    assert target_id_of(intent, target) == expected


def test_removing_a_done_favourite_or_boost_in_the_dm_undoes_it() -> None:
    assert undoing(Here(ALICE, DM), _around(_done(ActionKind.FAVOURITE))) == (
        ActionKind.UNFAVOURITE,
        "s1",
        WRITER,
    )
    assert undoing(Here(ALICE, DM), _around(_done(ActionKind.REBLOG))) == (ActionKind.UNREBLOG, "s1", WRITER)


@pytest.mark.parametrize(
    ("asker", "around"),
    [
        (Here(ALICE, DM), _around(None)),  # not a reaction the bot acted on
        (Here(ALICE, DM), _around(_done(ActionKind.FAVOURITE, state=ActionState.PENDING))),
        (Here(ALICE, DM), _around(_done(ActionKind.REPLY))),  # a reply is not undone
        (Here(EVE, DM), _around(_done(ActionKind.FAVOURITE, by=EVE))),  # not the account's owner
        (Here(EVE, DM), _around(_done(ActionKind.FAVOURITE))),  # someone else's reaction
        (Here(ALICE, GROUP), _around(_done(ActionKind.FAVOURITE))),  # not in the DM
        (Here(ALICE, DM), _around(_done(ActionKind.FAVOURITE), account=ONE[0])),  # now read only
        (Here(ALICE, DM), _around(_done(ActionKind.FAVOURITE), account=None)),  # the account is gone
    ],
)
def test_what_a_redaction_does_not_undo(asker: Here, around: Surroundings) -> None:
    assert undoing(asker, around) is None


@pytest.mark.parametrize(
    ("action", "text", "expected"),
    [
        (ActionKind.FAVOURITE, None, True),
        (ActionKind.UNREBLOG, None, True),
        (ActionKind.AUTHORIZE, None, True),
        (ActionKind.REPLY, "the answer", True),
        (ActionKind.REPLY, None, False),  # its text is gone: nothing to post
        (ActionKind.POST, "hello", True),
        (ActionKind.POST, None, False),
    ],
)
def test_resumable(action: ActionKind, text: str | None, expected: bool) -> None:
    assert resumable(dataclasses.replace(_done(action, state=ActionState.PENDING), text=text)) is expected


def _status(content: str, in_reply_to: str | None) -> Status:
    return Status(StatusId("p1"), None, None, content, "", "public", False, None, None, in_reply_to)


@pytest.mark.parametrize(
    ("status", "in_reply_to", "text", "expected"),
    [
        (_status("<p>hello   <b>World</b></p>", None), None, "hello world", True),
        (_status('<p><a href="x">@bob</a> sounds good</p>', "s1"), "s1", "Sounds  good", True),
        (_status("<p>sounds good</p>", "s2"), "s1", "sounds good", False),  # another reply target
        (_status("<p>sounds good</p>", "s1"), None, "sounds good", False),  # a reply, not a post
        (_status("<p>sounds good, thanks</p>", None), None, "sounds good", False),
    ],
)
def test_is_our_post(status: Status, in_reply_to: str | None, text: str, expected: bool) -> None:
    assert is_our_post(status, in_reply_to, text) is expected


def test_the_read_only_hint_names_the_command_that_allows_actions() -> None:
    hint = read_only_hint("!gts", "alice@one.example")
    assert hint.plain.startswith("@alice@one.example is connected read-only")
    assert hint.plain.endswith("!gts allow-actions alice@one.example")


@pytest.mark.parametrize(
    ("action", "posted", "plain"),
    [
        (ActionKind.FAVOURITE, None, "Favourited as @alice@one.example."),
        (ActionKind.REJECT, None, "Rejected the follow request as @alice@one.example."),
        (ActionKind.POST, PostedStatus(StatusId("p1"), None), "Posted as @alice@one.example."),
        (
            ActionKind.REPLY,
            PostedStatus(StatusId("p1"), "https://one.example/@alice/p1"),
            "Replied as @alice@one.example: https://one.example/@alice/p1",
        ),
    ],
)
def test_confirmation(action: ActionKind, posted: PostedStatus | None, plain: str) -> None:
    said = confirmation(action, WRITER, posted)
    assert said.plain == plain
    if posted is not None and posted.url:
        assert f'<a href="{posted.url}">' in said.html
