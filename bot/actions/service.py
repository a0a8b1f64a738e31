"""Acting on the fediverse from Matrix: a reaction, its redaction, a reply, or `post` → one server call,
exactly once, and a short confirmation in the user's DM.

Each request runs on the user's lane (the router calls in, inside its usual deadline and error replies).
Gating is `intents.gate`: anything not ours to act on is dropped without a word; a read-only account gets
one hint (per account, per `HINT_INTERVAL`) and the server hears nothing.

Exactly once (`journal`): the entry keyed by the Matrix event id is written `pending` at intake
(`note_*`, awaited on the sync loop before the sync token is saved; a reply's or post's text sealed),
and `done` after; a command refused before its server call withdraws its entry. Start-up resumes what
is pending from the last `RESUME_WITHIN` (`unfinished`, `resume`). A replayed event whose entry is done
does nothing. One still pending (the bot stopped between the call and `done`) is tried again with the same
`Idempotency-Key` (Mastodon and Akkoma answer a repeat with the first post); before posting again, the
account's recent statuses are searched for it, since GoToSocial ignores the key. Favourites, boosts and
their undoing are idempotent on the server; a follow request already answered is gone (404), which a
retry takes as done.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from bot.accounts import select_accounts
from bot.actions.intents import (
    DEFAULT_KEYS,
    Gate,
    ReactionKeys,
    gate,
    idempotency_key,
    reaction_intent,
    reply_intent,
    undo_of,
)
from bot.actions.journal import ActionJournal, Surroundings
from bot.commands.registry import CommandContext
from bot.connect import instance_from_key
from bot.errors import (
    ActionRefusedError,
    CommandError,
    InsufficientScopeError,
    RemoteNotFoundError,
    TokenRejectedError,
)
from bot.fediverse.instance import InstanceRef
from bot.fediverse.models import FediverseAccount, PostedStatus, Status
from bot.fediverse.replies import StatusDraft, Visibility, compose_reply
from bot.fediverse.scopes import can_act
from bot.relay.sanitize import html_to_text, safe_url
from bot.rich_text import RichText, join, link
from bot.store.action_journal import ActionKind, ActionRecord, ActionState, Intent
from bot.store.records import AccountRecord, utc_now

__all__ = ["ActionService", "FediverseWriter", "PostRequest", "parse_post"]

log = logging.getLogger(__name__)

HINT_INTERVAL = 24 * 3600.0
RESUME_WITHIN = timedelta(days=1)
RECENT_STATUSES_SEARCHED = 20
# A definite "no" from the server: nothing happened there, so the entry is dropped (asking again is new).
_REFUSALS = (ActionRefusedError, RemoteNotFoundError, InsufficientScopeError, TokenRejectedError)


class FediverseWriter(Protocol):
    """The fediverse calls actions make (`FediverseActions`, and `verify_credentials` of the client)."""

    async def get_status(self, instance: InstanceRef, token: str, status_id: str) -> Status: ...

    async def post_status(
        self, instance: InstanceRef, token: str, draft: StatusDraft, *, idempotency_key: str
    ) -> PostedStatus: ...

    async def recent_own_statuses(
        self, instance: InstanceRef, token: str, account_id: str, *, limit: int
    ) -> list[Status]: ...

    async def favourite(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def unfavourite(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def reblog(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def unreblog(self, instance: InstanceRef, token: str, status_id: str) -> None: ...

    async def authorize_follow_request(self, instance: InstanceRef, token: str, account_id: str) -> None: ...

    async def reject_follow_request(self, instance: InstanceRef, token: str, account_id: str) -> None: ...


class Credentials(Protocol):
    async def verify_credentials(self, instance: InstanceRef, token: str) -> FediverseAccount: ...


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
    if first is not None and first.group(1).lower() != "all":
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


@dataclass(frozen=True)
class _Outcome:
    """What to tell the user when an action is done; `posted` for a new post."""

    posted: PostedStatus | None = None


Call = Callable[[str], Awaitable[_Outcome]]  # idempotency key → what happened


@dataclass(frozen=True)
class _Job:
    action: ActionKind
    target_id: str | None
    call: Call
    find: Callable[[], Awaitable[PostedStatus | None]] | None = None  # a post an earlier try made


class ActionService:
    def __init__(
        self,
        *,
        journal: ActionJournal,
        writer: FediverseWriter,
        credentials: Credentials,
        allow_http: bool,
        clock: Callable[[], float],
        keys: ReactionKeys = DEFAULT_KEYS,
    ) -> None:
        self._journal = journal
        self._writer = writer
        self._credentials = credentials
        self._allow_http = allow_http
        self._clock = clock
        self._keys = keys
        self._hinted: dict[int, float] = {}

    # ---- intake (called on the user's lane) ----

    async def react(self, ctx: CommandContext, event_id: str, relates_to: str, key: str) -> None:
        around = await self._journal.surroundings(ctx.sender, relates_to)
        if around.mapped is None:
            return
        intent = reaction_intent(key, around.mapped.target, self._keys)
        if intent is None:
            return
        account = await self._gated(ctx, around)
        if account is not None:
            await self._act(ctx, event_id, account, intent, around)

    async def take_back(self, ctx: CommandContext, event_id: str, redacts: str) -> None:
        """A redaction: if it removes a reaction that favourited or boosted, undo that."""
        undo = _undo(ctx, await self._journal.surroundings(ctx.sender, redacts))
        if undo is not None:
            action, target_id, account = undo
            job = _Job(action, target_id, self._simple(account, action, target_id))
            await self._run(ctx, event_id, account, job)

    async def is_relayed(self, event_id: str) -> bool:
        return await self._journal.is_relayed(event_id)

    async def reply(self, ctx: CommandContext, event_id: str, reply_to: str, text: str) -> None:
        around = await self._journal.surroundings(ctx.sender, reply_to)
        if around.mapped is None:
            return
        intent = reply_intent(text, around.mapped.target)
        if intent is None:
            if around.mapped.target.requester_account_id is not None and _verdict(ctx, around) is Gate.ACT:
                await ctx.reply(RichText.text("To answer a follow request, reply accept or reject."))
            return
        account = await self._gated(ctx, around)
        if account is not None:
            await self._act(ctx, event_id, account, intent, around, text=text)

    async def post(self, ctx: CommandContext, event_id: str, rest: str) -> None:
        """`post [<account>] [visibility] <text>`."""
        try:
            request = parse_post(rest, await self._journal.accounts_of(ctx.sender))
        except CommandError:
            await self._journal.withdraw(event_id)  # what intake wrote must not be resumed
            raise
        account = request.account
        if not _can_act(account):
            await self._journal.withdraw(event_id)
            await ctx.reply(self._hint(ctx, account))
            return
        await self._run(ctx, event_id, account, self._post_job(account, request.visibility, request.text))

    # ---- intake (called from the sync loop, before the sync token moves past the event) ----

    async def note_reaction(
        self, sender: str, room_id: str, event_id: str, relates_to: str, key: str
    ) -> None:
        """Write what a reaction asks for to the journal if it is an action the sender may take, so that
        it is done even if the bot stops before its turn comes."""
        around = await self._journal.surroundings(sender, relates_to)
        if around.mapped is not None:
            intent = reaction_intent(key, around.mapped.target, self._keys)
            await self._note(_Here(sender, room_id), event_id, around, intent)

    async def note_redaction(self, sender: str, room_id: str, event_id: str, redacts: str) -> None:
        """As `note_reaction`, for the redaction of a reaction whose favourite or boost is undone."""
        undo = _undo(_Here(sender, room_id), await self._journal.surroundings(sender, redacts))
        if undo is not None:
            action, target_id, account = undo
            await self._journal.receive(
                Intent(event_id, sender, account.id, action, target_id, idempotency_key(event_id))
            )

    async def note_reply(self, sender: str, room_id: str, event_id: str, reply_to: str, text: str) -> None:
        """As `note_reaction`, for a reply (its text encrypted)."""
        around = await self._journal.surroundings(sender, reply_to)
        if around.mapped is not None:
            intent = reply_intent(text, around.mapped.target)
            await self._note(_Here(sender, room_id), event_id, around, intent, text=text)

    async def _note(
        self, here: _Here, event_id: str, around: Surroundings, intent: ActionKind | None, *, text: str = ""
    ) -> None:
        account = around.account
        if intent is None or account is None or around.mapped is None:
            return
        if _verdict(here, around, account_can_act=_can_act(account)) is not Gate.ACT:
            return
        target = around.mapped.target
        target_id = target.requester_account_id if intent in _FOLLOW_ANSWERS else target.status_id
        await self._journal.receive(
            Intent(
                event_id,
                here.sender,
                account.id,
                intent,
                target_id,
                idempotency_key(event_id),
                text=text if intent is ActionKind.REPLY else None,
            )
        )

    async def note_post(self, sender: str, room_id: str, event_id: str, rest: str) -> None:
        """Write what a `post` command asks for to the journal (its text encrypted), as `note_reply`:
        only when it will run (typed in the sender's DM, for an account that can act)."""
        if await self._journal.dm_room(sender) != room_id:
            return  # refused when the command runs
        try:
            request = parse_post(rest, await self._journal.accounts_of(sender))
        except CommandError:
            return  # answered when the command runs
        account = request.account
        if not _can_act(account):
            return
        visibility = None if request.visibility is None else request.visibility.api_name
        await self._journal.receive(
            Intent(
                event_id,
                sender,
                account.id,
                ActionKind.POST,
                None,
                idempotency_key(event_id),
                text=request.text,
                visibility=visibility,
            )
        )

    async def withdraw(self, event_id: str) -> None:
        """A `post` refused before its turn (not in the DM): drop what `note_post` wrote."""
        await self._journal.withdraw(event_id)

    # ---- after a restart ----

    async def unfinished(self) -> list[ActionRecord]:
        """Actions a stopped bot left pending, from the last `RESUME_WITHIN`: those that only name their
        target (favourite, boost, their undoing, follow requests), and replies and posts with their
        text (written at intake)."""
        since = utc_now() - RESUME_WITHIN
        return [e for e in await self._journal.pending() if e.created_at >= since and _resumable(e)]

    async def resume(self, ctx: CommandContext, entry: ActionRecord) -> None:
        """Finish `entry` (from `unfinished`), answering in the user's DM (`ctx`)."""
        account = await self._journal.account(entry.account_id)
        if account is None or account.matrix_user_id != entry.matrix_user_id or not _can_act(account):
            return
        if entry.action is ActionKind.POST and entry.text is not None:
            visibility = None if entry.visibility is None else Visibility.parse(entry.visibility)
            job = self._post_job(account, visibility, entry.text)
        elif entry.action is ActionKind.REPLY and entry.text is not None and entry.target_id is not None:
            job = self._reply_job(account, entry.target_id, entry.text)
        elif entry.target_id is not None and entry.action in _RESUMABLE:
            job = _Job(entry.action, entry.target_id, self._simple(account, entry.action, entry.target_id))
        else:
            return
        await self._run(ctx, entry.event_id, account, job)

    async def _default(self, account: AccountRecord) -> Visibility:
        """The account's own default visibility (`source.privacy`), as its settings say."""
        instance = instance_from_key(account.instance, allow_http=self._allow_http)
        me = await self._credentials.verify_credentials(instance, account.token)
        return Visibility.parse(me.default_visibility or "public")

    # ---- gating ----

    async def _gated(self, ctx: CommandContext, around: Surroundings) -> AccountRecord | None:
        account = around.account
        can = account is not None and _can_act(account)
        verdict = _verdict(ctx, around, account_can_act=can)
        if verdict is Gate.IGNORE or account is None:
            return None
        if verdict is Gate.HINT:
            if self._hint_due(account):
                await ctx.reply(self._hint(ctx, account))
            return None
        return account

    def _hint_due(self, account: AccountRecord) -> bool:
        now = self._clock()
        if now - self._hinted.get(int(account.id), -HINT_INTERVAL) < HINT_INTERVAL:
            return False
        self._hinted[int(account.id)] = now
        return True

    @staticmethod
    def _hint(ctx: CommandContext, account: AccountRecord) -> RichText:
        return RichText.text(
            f"@{account.acct} is connected read-only, so I can't act on it. "
            f"To allow replies, favourites, boosts and follow requests from here: "
            f"{ctx.prefix} allow-actions {account.acct}"
        )

    # ---- doing ----

    async def _act(
        self,
        ctx: CommandContext,
        event_id: str,
        account: AccountRecord,
        intent: ActionKind,
        around: Surroundings,
        *,
        text: str = "",
    ) -> None:
        assert around.mapped is not None
        target = around.mapped.target
        if intent is ActionKind.REPLY:
            await self._run(ctx, event_id, account, self._reply_job(account, target.status_id or "", text))
            return
        target_id = target.requester_account_id if intent in _FOLLOW_ANSWERS else target.status_id
        if target_id is not None:
            await self._run(
                ctx, event_id, account, _Job(intent, target_id, self._simple(account, intent, target_id))
            )

    def _reply_job(self, account: AccountRecord, status_id: str, text: str) -> _Job:
        instance = instance_from_key(account.instance, allow_http=self._allow_http)

        async def reply(key: str) -> _Outcome:
            original = await self._writer.get_status(instance, account.token, status_id)
            draft = compose_reply(original, account.acct, text, visibility=await self._default(account))
            posted = await self._writer.post_status(instance, account.token, draft, idempotency_key=key)
            return _Outcome(posted)

        async def find() -> PostedStatus | None:
            original = await self._writer.get_status(instance, account.token, status_id)
            return await self._find(account, (original.reblog or original).id, text)  # as compose_reply

        return _Job(ActionKind.REPLY, status_id, reply, find=find)

    def _post_job(self, account: AccountRecord, visibility: Visibility | None, text: str) -> _Job:
        instance = instance_from_key(account.instance, allow_http=self._allow_http)

        async def post(key: str) -> _Outcome:
            draft = StatusDraft(text, None, visibility or await self._default(account))
            return _Outcome(
                await self._writer.post_status(instance, account.token, draft, idempotency_key=key)
            )

        return _Job(ActionKind.POST, None, post, find=lambda: self._find(account, None, text))

    def _simple(self, account: AccountRecord, action: ActionKind, target_id: str) -> Call:
        """The call of an action that only names its target (favourite, boost, follow request, undo)."""
        instance = instance_from_key(account.instance, allow_http=self._allow_http)
        calls = {
            ActionKind.FAVOURITE: self._writer.favourite,
            ActionKind.UNFAVOURITE: self._writer.unfavourite,
            ActionKind.REBLOG: self._writer.reblog,
            ActionKind.UNREBLOG: self._writer.unreblog,
            ActionKind.AUTHORIZE: self._writer.authorize_follow_request,
            ActionKind.REJECT: self._writer.reject_follow_request,
        }
        method = calls[action]

        async def call(key: str) -> _Outcome:
            await method(instance, account.token, target_id)  # idempotent on the server: no key needed
            return _Outcome()

        return call

    async def _run(self, ctx: CommandContext, event_id: str, account: AccountRecord, job: _Job) -> None:
        """Do `job` once for `event_id` (see the module docstring), then confirm."""
        action = job.action
        key = idempotency_key(event_id)
        started = await self._journal.start(
            event_id=event_id,
            user_id=ctx.sender,
            account_id=account.id,
            action=action,
            target_id=job.target_id,
            idempotency_key=key,
        )
        if started.entry.state is ActionState.DONE:
            log.info("the %s asked for by %s was done before; not repeated", action, event_id)
            return
        outcome: _Outcome | None = None
        if not started.fresh and job.find is not None:
            found = await job.find()
            if found is not None:
                log.info(
                    "the %s asked for by %s is on the server already; not posted again", action, event_id
                )
                outcome = _Outcome(found)
        if outcome is None:
            try:
                outcome = await job.call(key)
            except RemoteNotFoundError:
                if started.fresh or action not in _FOLLOW_ANSWERS:
                    await self._journal.abandon(event_id)
                    raise
                outcome = _Outcome()  # answered by the earlier try, which stopped before `finish`
            except _REFUSALS:
                await self._journal.abandon(event_id)
                raise
            # Any other error: it may or may not have happened; the entry stays pending for a replay.
        posted = outcome.posted
        if posted is None:
            await self._journal.finish(event_id)
        else:
            await self._journal.finish(event_id, result_id=posted.id, url=posted.url)
        await ctx.reply(_confirmation(action, account, posted))

    async def _find(self, account: AccountRecord, in_reply_to: str | None, text: str) -> PostedStatus | None:
        """A post of ours that an unfinished try already made: same reply target, and its text ends
        with what the user wrote (the server adds mentions and markup)."""
        instance = instance_from_key(account.instance, allow_http=self._allow_http)
        recent = await self._writer.recent_own_statuses(
            instance, account.token, account.fediverse_account_id, limit=RECENT_STATUSES_SEARCHED
        )
        wanted = _plain(text)
        for status in recent:
            if status.in_reply_to_id == in_reply_to and _plain(html_to_text(status.content)).endswith(wanted):
                return PostedStatus(status.id, safe_url(status.url))
        return None


_FOLLOW_ANSWERS = frozenset({ActionKind.AUTHORIZE, ActionKind.REJECT})
_RESUMABLE = _FOLLOW_ANSWERS | {
    ActionKind.FAVOURITE,
    ActionKind.UNFAVOURITE,
    ActionKind.REBLOG,
    ActionKind.UNREBLOG,
}


@dataclass(frozen=True)
class _Here:
    """Who acts where, for gating at intake (before there is a command context)."""

    sender: str
    room_id: str


def _can_act(account: AccountRecord) -> bool:
    return can_act(account.scopes, account.software)


def _undo(ctx: CommandContext | _Here, around: Surroundings) -> tuple[ActionKind, str, AccountRecord] | None:
    """What a redaction in `ctx` takes back: the undoing of the sender's own done favourite or boost
    (its target, the account), when it is in their DM and the account can act; else None."""
    earlier, account = around.earlier, around.account
    if earlier is None or earlier.state is not ActionState.DONE or earlier.matrix_user_id != ctx.sender:
        return None
    undo, target_id = undo_of(earlier.action), earlier.target_id
    if undo is None or target_id is None or account is None or around.dm_room_id != ctx.room_id:
        return None
    if account.matrix_user_id != ctx.sender or not _can_act(account):
        return None
    return undo, target_id, account


def _resumable(entry: ActionRecord) -> bool:
    if entry.action in (ActionKind.REPLY, ActionKind.POST):
        return entry.text is not None
    return entry.action in _RESUMABLE


def _verdict(ctx: CommandContext | _Here, around: Surroundings, *, account_can_act: bool = True) -> Gate:
    account = around.account
    return gate(
        sender=ctx.sender,
        room_id=ctx.room_id,
        dm_room_id=around.dm_room_id,
        mapped=around.mapped,
        account_owner=None if account is None else account.matrix_user_id,
        account_can_act=account_can_act,
    )


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


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


def _confirmation(action: ActionKind, account: AccountRecord, posted: PostedStatus | None) -> RichText:
    said = f"{_DONE[action]} as @{account.acct}"
    if posted is not None and posted.url:
        return join(RichText.text(said + ": "), link(posted.url))
    return RichText.text(said + ".")
