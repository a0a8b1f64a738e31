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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.actions.decisions import (
    FOLLOW_ANSWERS,
    TARGET_ONLY,
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
from bot.actions.intents import (
    DEFAULT_KEYS,
    Gate,
    ReactionKeys,
    idempotency_key,
    reaction_intent,
    reply_intent,
)
from bot.actions.journal import ActionJournal, Surroundings
from bot.actions.ports import Credentials, FediverseWriter
from bot.commands.registry import CommandContext
from bot.connect import instance_from_key
from bot.errors import (
    ActionRefusedError,
    CommandError,
    InsufficientScopeError,
    RemoteNotFoundError,
    TokenRejectedError,
)
from bot.fediverse.models import PostedStatus
from bot.fediverse.replies import StatusDraft, Visibility, compose_reply
from bot.relay.sanitize import safe_url
from bot.rich_text import RichText
from bot.store.action_journal import ActionKind, ActionRecord, ActionState, Intent
from bot.store.records import AccountRecord, utc_now

__all__ = ["RESUME_WITHIN", "ActionService"]

log = logging.getLogger(__name__)

HINT_INTERVAL = 24 * 3600.0
RESUME_WITHIN = timedelta(days=1)
RECENT_STATUSES_SEARCHED = 20
# A definite "no" from the server: nothing happened there, so the entry is dropped (asking again is new).
_REFUSALS = (ActionRefusedError, RemoteNotFoundError, InsufficientScopeError, TokenRejectedError)


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
        undo = undoing(ctx, await self._journal.surroundings(ctx.sender, redacts))
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
            if around.mapped.target.requester_account_id is not None and verdict(ctx, around) is Gate.ACT:
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
        if not can_act_with(account):
            await self._journal.withdraw(event_id)
            await ctx.reply(read_only_hint(ctx.prefix, account.acct))
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
            await self._note(Here(sender, room_id), event_id, around, intent)

    async def note_redaction(self, sender: str, room_id: str, event_id: str, redacts: str) -> None:
        """As `note_reaction`, for the redaction of a reaction whose favourite or boost is undone."""
        undo = undoing(Here(sender, room_id), await self._journal.surroundings(sender, redacts))
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
            await self._note(Here(sender, room_id), event_id, around, intent, text=text)

    async def _note(
        self, here: Here, event_id: str, around: Surroundings, intent: ActionKind | None, *, text: str = ""
    ) -> None:
        account = around.account
        if intent is None or account is None or around.mapped is None:
            return
        if verdict(here, around, account_can_act=can_act_with(account)) is not Gate.ACT:
            return
        target_id = target_id_of(intent, around.mapped.target)
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
        if not can_act_with(account):
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
        return [e for e in await self._journal.pending() if e.created_at >= since and resumable(e)]

    async def resume(self, ctx: CommandContext, entry: ActionRecord) -> None:
        """Finish `entry` (from `unfinished`), answering in the user's DM (`ctx`)."""
        account = await self._journal.account(entry.account_id)
        if account is None or account.matrix_user_id != entry.matrix_user_id or not can_act_with(account):
            return
        if entry.action is ActionKind.POST and entry.text is not None:
            visibility = None if entry.visibility is None else Visibility.parse(entry.visibility)
            job = self._post_job(account, visibility, entry.text)
        elif entry.action is ActionKind.REPLY and entry.text is not None and entry.target_id is not None:
            job = self._reply_job(account, entry.target_id, entry.text)
        elif entry.target_id is not None and entry.action in TARGET_ONLY:
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
        can = account is not None and can_act_with(account)
        gated = verdict(ctx, around, account_can_act=can)
        if gated is Gate.IGNORE or account is None:
            return None
        if gated is Gate.HINT:
            if self._hint_due(account):
                await ctx.reply(read_only_hint(ctx.prefix, account.acct))
            return None
        return account

    def _hint_due(self, account: AccountRecord) -> bool:
        now = self._clock()
        if now - self._hinted.get(int(account.id), -HINT_INTERVAL) < HINT_INTERVAL:
            return False
        self._hinted[int(account.id)] = now
        return True

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
        target_id = target_id_of(intent, target)
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
                if started.fresh or action not in FOLLOW_ANSWERS:
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
        await ctx.reply(confirmation(action, account, posted))

    async def _find(self, account: AccountRecord, in_reply_to: str | None, text: str) -> PostedStatus | None:
        """A post of ours that an unfinished try already made: same reply target, and its text ends
        with what the user wrote (the server adds mentions and markup)."""
        instance = instance_from_key(account.instance, allow_http=self._allow_http)
        recent = await self._writer.recent_own_statuses(
            instance, account.token, account.fediverse_account_id, limit=RECENT_STATUSES_SEARCHED
        )
        for status in recent:
            if is_our_post(status, in_reply_to, text):
                return PostedStatus(status.id, safe_url(status.url))
        return None
