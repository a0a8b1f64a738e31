"""Matrix events → what the bot does: commands, pasted codes, invites, undecryptable messages, leaves.

The router only dispatches: each user's work runs on their lane (`user_lanes`), leaked codes are handled
by `leaked_codes`, acting on relayed messages by `action_dispatch`, and what the bot says unprompted lives
in `greetings`. Its collaborators are the small protocols in `router_ports`, so it can be built from
recording fakes; commands run with the deadline and error replies of `command_run`.

Security rules live here: only allowed users are answered; secrets (authorize URLs, codes, account
details) only go to the sender's 1:1 DM; a code pasted anywhere else is redacted and its flow
cancelled; exception text never reaches a room (the user gets a reference that is in the log).

Fairness (README, "Fairness"): `handle` runs on the sync loop and never awaits anything a user caused.
It only classifies the event (pure checks and in-memory counters) and hands the work to that user's
lane (`user_lanes`): a bounded queue worked off in order by the user's own task, a few lanes at a
time. Excess is dropped, and chatter is coalesced: ordinary chat earns at most one "I only
understand commands" hint per user and room per `CHAT_HINT_SECONDS`, the throttle warning one a
minute, and the undecryptable-message notice one per room and reason per 10 minutes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from bot import greetings
from bot.action_dispatch import ActionDispatcher
from bot.command_run import RoomContext, run_guarded
from bot.commands.parse import ParsedCommand, after_command_words, parse_command
from bot.commands.throttle import UserThrottle
from bot.config import MatrixConfig, is_user_allowed
from bot.errors import new_reference
from bot.fediverse.oauth import extract_code
from bot.fediverse.replies import matrix_body_to_status_text
from bot.leaked_codes import LeakedCodes, PendingFlows, looks_like_pasted_code
from bot.matrix.types import (
    BotEvent,
    IncomingMessage,
    Invite,
    MemberLeft,
    Reaction,
    Redaction,
    RoomChanged,
    RoomId,
    UndecryptableMessage,
)
from bot.rich_text import RichText
from bot.router_ports import Commands, DmRooms, HandledEvents, MatrixPort, RelayUsers
from bot.user_lanes import UserLanes, Work

__all__ = ["Router"]

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 8192
CHAT_HINT_SECONDS = 60.0
_THROTTLE_WARNING_SECONDS = 60.0
_UNDECRYPTABLE_REPEAT_SECONDS = 600.0
_THROTTLED = "You are sending commands too quickly; I'll ignore them for a minute."


def _only_here(name: str, usage: str) -> str:
    return (
        f"{name} only works here, in our direct chat, so I did nothing with what you typed there. "
        f"Usage: {usage}"
    )


def _remember(seen: dict[str, float], key: str, now: float, *, keep_for: float) -> None:
    """Note when `key` was last warned about; entries older than `keep_for` are dropped as it grows."""
    seen[key] = now
    if len(seen) > 10_000:
        for old, when in list(seen.items()):
            if now - when > keep_for:
                del seen[old]


class Router:
    def __init__(
        self,
        *,
        matrix: MatrixPort,
        dms: DmRooms,
        commands: Commands,
        flows: PendingFlows,
        handled: HandledEvents,
        config: MatrixConfig,
        throttle: UserThrottle,
        relay: RelayUsers,
        bot_user_id: str,
        clock: Callable[[], float],
        acting: ActionDispatcher | None = None,
    ) -> None:
        self._acting = acting
        self._relay = relay
        self._bot_user_id = bot_user_id
        self._matrix = matrix
        self._dms = dms
        self._commands = commands
        self._flows = flows
        self._handled = handled
        self._config = config
        self._throttle = throttle
        self._clock = clock
        self._undecryptable_warned: dict[str, float] = {}
        self._throttle_warned: dict[str, float] = {}
        self._chat_hinted: dict[str, float] = {}
        self._lanes = UserLanes()
        self._leaks = LeakedCodes(flows=flows, matrix=matrix, dms=dms, prefix=config.command_prefix)

    @property
    def dropped(self) -> int:
        """Work items dropped because a user's lane was full."""
        return self._lanes.dropped

    @property
    def _prefix(self) -> str:
        return self._config.command_prefix

    @property
    def _only_commands(self) -> str:
        return f"I only understand commands. Try: {self._prefix} help"

    def _allowed(self, user_id: str | None) -> bool:
        return user_id is not None and is_user_allowed(self._config, user_id)

    async def handle(self, event: BotEvent) -> None:
        """Classify `event` and queue its work on a user's lane; returns without awaiting that work."""
        try:
            if isinstance(event, IncomingMessage):
                await self._on_message(event)
            elif isinstance(event, Reaction | Redaction):
                await self._on_acting(event)
            elif isinstance(event, Invite):
                self._on_invite(event)
            elif isinstance(event, UndecryptableMessage):
                self._on_undecryptable(event)
            elif isinstance(event, MemberLeft):
                # The bot's own removal is nobody's lane in particular: it gets the bot's.
                self._enqueue(event.user_id, lambda: self._on_left(event))
            elif isinstance(event, RoomChanged):
                # The room's own lane: whoever changed it may not be a user of the bot at all.
                self._enqueue(event.room_id, lambda: self._dms.recheck(event.room_id))
        except Exception:
            # One bad event must not stop the sync loop; the full story is in the (redacted) log.
            log.exception("handling a %s in %s failed", type(event).__name__, event.room_id)

    # ---- lanes: each user's work, in order, off the sync loop (`user_lanes`) ----

    def _enqueue(self, user_id: str, work: Work) -> None:
        self._lanes.enqueue(user_id, work)

    async def settled(self) -> None:
        """Until every lane is empty (tests, and a marker that queued work is done)."""
        await self._lanes.settled()

    async def aclose(self, grace: float = 10.0) -> None:
        """Let queued work finish (up to `grace` seconds), then cancel the rest."""
        await self._lanes.aclose(grace)

    def _due(self, seen: dict[str, float], key: str, interval: float) -> bool:
        """True (and noted) when `key` was not acted on within `interval` seconds."""
        now = self._clock()
        if now - seen.get(key, -1e18) < interval:
            return False
        _remember(seen, key, now, keep_for=interval)
        return True

    # ---- messages ----

    async def _on_message(self, msg: IncomingMessage) -> None:
        if not self._allowed(msg.sender) or msg.msgtype != "m.text":
            return
        body = msg.body
        if msg.reply_to is not None:
            body = matrix_body_to_status_text(msg.body, msg.formatted_body)
            msg = dataclasses.replace(msg, body=body)
        parsed = parse_command(body, self._prefix)
        if msg.reply_to is not None and parsed is None and not looks_like_pasted_code(body):
            # A reply to a relayed message acts on it; in the DM while a connection waits for its code, a
            # reply to anything else is taken as the code; otherwise it is ignored without a word.
            if not await self._in_recorded_dm(msg.sender, msg.room_id):
                return  # replies elsewhere act on nothing, so they cost the user nothing either
            if self._may_act(msg.sender, msg.room_id):
                reply_to = msg.reply_to
                if self._acting is not None:
                    await self._acting.note_reply(msg, reply_to)
                self._enqueue(msg.sender, lambda: self._on_reply(msg, reply_to))
            return
        if parsed is None and not looks_like_pasted_code(msg.body):
            # Ordinary chat: at most one hint per interval, and no database write or state fetch for it.
            if self._due(self._chat_hinted, f"{msg.sender}|{msg.room_id}", CHAT_HINT_SECONDS):
                self._enqueue(msg.sender, lambda: self._hint_in_dm(msg))
            return
        if not self._throttle.allow(msg.sender):
            if self._due(self._throttle_warned, msg.sender, _THROTTLE_WARNING_SECONDS):
                self._enqueue(msg.sender, lambda: self._reply(msg.sender, msg.room_id, _THROTTLED))
            return
        if self._acting is not None and parsed is not None and self._is_post(parsed, body):
            await self._acting.note_post(msg, after_command_words(body) or "")
        self._enqueue(msg.sender, lambda: self._on_addressed_once(msg, parsed))

    async def _on_reply(self, msg: IncomingMessage, reply_to: str) -> None:
        if self._acting is not None and await self._acting.reply(msg, reply_to):
            return
        if await self._awaits_code_in_dm(msg) and await self._handled.mark_handled(msg.event_id, msg.room_id):
            here = RoomContext(msg.sender, msg.room_id, self._prefix, self._matrix, msg.event_id, msg.body)
            await run_guarded(here, lambda: self._commands.submit_code(here, msg.body), "code")

    async def _awaits_code_in_dm(self, msg: IncomingMessage) -> bool:
        return await self._flows.has_pending(msg.sender) and await self._dms.is_dm(msg.sender, msg.room_id)

    def _is_post(self, parsed: ParsedCommand, body: str) -> bool:
        """A `post` command that `_on_addressed` will not refuse for its shape (the service checks the
        room, the account and the text when noting it)."""
        command = self._commands.registry.get(parsed.name)
        return (
            command is not None
            and command.name == "post"
            and command.accepts(parsed.args)
            and len(body.encode()) <= MAX_COMMAND_BYTES
        )

    # ---- acting on relayed messages (`action_dispatch`) ----

    async def _on_acting(self, event: Reaction | Redaction) -> None:
        if self._acting is None or not self._allowed(event.sender):
            return
        if not await self._in_recorded_dm(event.sender, event.room_id):
            return  # reactions in group rooms act on nothing, so they cost the user nothing either
        if self._may_act(event.sender, event.room_id):
            self._enqueue(event.sender, await self._acting.intake(event))

    async def _in_recorded_dm(self, user_id: str, room_id: str) -> bool:
        return await self._dms.room_for(user_id) == room_id

    def _may_act(self, user_id: str, room_id: str) -> bool:
        """Charge the user's command budget; when it is spent, say so (once a while) instead of acting."""
        if self._throttle.allow(user_id):
            return True
        if self._due(self._throttle_warned, user_id, _THROTTLE_WARNING_SECONDS):
            self._enqueue(user_id, lambda: self._reply(user_id, room_id, _THROTTLED))
        return False

    async def resume_actions(self) -> None:
        """Queue the actions a stopped bot left unfinished on their users' lanes."""
        if self._acting is not None:
            for user_id, work in await self._acting.unfinished():
                self._enqueue(user_id, work)

    async def _hint_in_dm(self, msg: IncomingMessage) -> None:
        if await self._dms.room_for(msg.sender) == msg.room_id:
            await self._reply(msg.sender, msg.room_id, self._only_commands)

    async def _on_addressed_once(self, msg: IncomingMessage, parsed: ParsedCommand | None) -> None:
        if await self._handled.mark_handled(msg.event_id, msg.room_id):  # False: a replay
            await self._on_addressed(msg, parsed)

    async def _on_addressed(self, msg: IncomingMessage, parsed: ParsedCommand | None) -> None:
        in_dm = await self._dms.is_dm(msg.sender, msg.room_id)
        if not in_dm and self._acting is not None and parsed is not None and self._is_post(parsed, msg.body):
            # Noted at intake in what was the DM, refused now that the room is not (or no longer) private.
            await self._acting.withdraw(msg.event_id)
        is_code_command = parsed is not None and parsed.name == "code"
        if not in_dm and await self._leaks.is_leaked(msg, is_code_command=is_code_command):
            pasted = parsed.args[0] if parsed is not None and parsed.args else msg.body
            await self._leaks.handle(msg, extract_code(pasted))
            return
        here = RoomContext(msg.sender, msg.room_id, self._prefix, self._matrix, msg.event_id, msg.body)
        if parsed is None:
            if in_dm and await self._flows.has_pending(msg.sender):
                await run_guarded(here, lambda: self._commands.submit_code(here, msg.body), "code")
            elif in_dm:
                await here.reply(RichText.text(self._only_commands))
            return
        if len(msg.body.encode()) > MAX_COMMAND_BYTES:
            await here.reply(RichText.text("That command is too long."))
            return
        command = self._commands.registry.get(parsed.name)
        if command is None:
            await here.reply(RichText.text(f"Unknown command {parsed.name[:40]!r}. Try: {self._prefix} help"))
            return
        if not command.accepts(parsed.args):
            await here.reply(RichText.text("Usage: " + command.usage_line(self._prefix)))
            return
        ctx = here
        if command.dm_only and not in_dm:
            try:
                dm = await self._dms.ensure(msg.sender)
            except Exception:
                ref = new_reference()
                log.exception("could not open a DM with %s [ref %s]", msg.sender, ref)
                await here.reply(RichText.text(f"I could not open a direct chat with you (reference {ref})."))
                return
            await here.reply(RichText.text("I've sent you a direct message."))
            ctx = RoomContext(msg.sender, dm, self._prefix, self._matrix, msg.event_id, msg.body)
            if command.refused_outside_dm:
                await ctx.reply(RichText.text(_only_here(command.name, command.usage_line(self._prefix))))
                return
        await run_guarded(ctx, lambda: command.handler(ctx, parsed.args), parsed.name)

    async def _reply(self, user_id: str, room_id: str, text: str) -> None:
        await RoomContext(user_id, room_id, self._prefix, self._matrix).reply(RichText.text(text))

    # ---- rooms ----

    def _on_invite(self, invite: Invite) -> None:
        if invite.inviter is None or not self._allowed(invite.inviter):
            log.info("ignored an invite to %s from a user who is not allowed", invite.room_id)
            return
        self._enqueue(invite.inviter, lambda: self._join(invite))

    async def _join(self, invite: Invite) -> None:
        assert invite.inviter is not None
        await self._matrix.join(invite.room_id)
        if invite.is_direct and await self._dms.is_dm(invite.inviter, invite.room_id):
            await RoomContext(invite.inviter, invite.room_id, self._prefix, self._matrix).reply(
                greetings.welcome(self._prefix)
            )

    def _on_undecryptable(self, msg: UndecryptableMessage) -> None:
        key = f"{msg.room_id}|{msg.sender}|{msg.reason}"
        if self._allowed(msg.sender) and self._due(
            self._undecryptable_warned, key, _UNDECRYPTABLE_REPEAT_SECONDS
        ):
            self._enqueue(msg.sender, lambda: self._explain_undecryptable(msg))

    async def _explain_undecryptable(self, msg: UndecryptableMessage) -> None:
        if not await self._dms.is_dm(msg.sender, msg.room_id):
            return  # a group's undecryptable chat is none of the bot's business, and no place for notices
        await RoomContext(msg.sender, msg.room_id, self._prefix, self._matrix).reply(
            greetings.undecryptable(msg.reason)
        )

    async def dm_lost(self, user_id: str, room_id: str) -> None:
        """A user's DM is no longer private (`DmDirectory.on_lost`): stop relaying there and say so.

        The room only gets a generic line: whoever else is in it must learn nothing about the user's
        notifications. Relaying resumes in a new DM, opened by the user's next command.
        """
        await self._relay.suspend_user(user_id)
        try:
            notice = greetings.dm_not_private()
            await self._matrix.send_notice(RoomId(room_id), notice.plain, notice.html)
        except Exception:
            log.warning("could not tell %s that its DM stopped being private", room_id, exc_info=True)

    async def _on_left(self, event: MemberLeft) -> None:
        """The user left their DM, or the bot was removed from it: relaying to them waits for a new DM."""
        if event.user_id == self._bot_user_id:
            user = await self._dms.forget_room_of_any_user(event.room_id)
        elif await self._dms.forget_room(event.user_id, event.room_id):
            user = event.user_id
            await self._matrix.leave(event.room_id)
        else:
            return
        if user is not None:
            log.info(
                "%s no longer has a DM with the bot (%s); relaying waits for a new one", user, event.room_id
            )
            await self._relay.suspend_user(user)
