"""The chat commands. Each handler gets a context whose replies go to the sender's DM (see registry)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from bot.accounts import AccountsService, RevokeOutcome, names_accounts, parse_types, select_accounts
from bot.commands.parse import after_command_words
from bot.commands.registry import Command, CommandContext, CommandRegistry
from bot.connect import ConnectFlows, StartedFlow
from bot.errors import CommandError
from bot.fediverse.oauth import extract_code
from bot.fediverse.scopes import KNOWN_SCOPES, can_act
from bot.rich_text import RichText, bold, code, join, link
from bot.store.models import AccountState
from bot.store.records import AccountRecord, Clock

FORGOTTEN = (
    "Everything I stored about you is deleted (accounts, requests, settings, queued notifications), and "
    "I am leaving this chat. Only the public keys of your devices stay in my encryption store, as in any "
    "Matrix client you shared a room with."
)


def _minutes_left(expires_at: datetime, now: datetime) -> int:
    return max(1, round((expires_at - now).total_seconds() / 60))


def _is_account_selector(word: str) -> bool:
    return names_accounts(word)


class DmLeaving(Protocol):
    """Leaving a user's DM (`bot.dm_registry.DmDirectory`)."""

    async def leave(self, user_id: str, room_id: str) -> bool: ...


class Posting(Protocol):
    """`post` (`bot.actions.service.ActionService`)."""

    async def post(self, ctx: CommandContext, event_id: str, rest: str) -> None: ...




class BotCommands:
    """Builds the registry; holds the services the handlers call."""

    def __init__(
        self,
        *,
        flows: ConnectFlows,
        accounts: AccountsService,
        clock: Clock,
        posting: Posting | None = None,
        dms: DmLeaving | None = None,
    ) -> None:
        self._dms = dms
        self._flows = flows
        self._accounts = accounts
        self._clock = clock
        self._posting = posting
        self.registry = CommandRegistry()
        for command in self._commands():
            self.registry.add(command)

    def _commands(self) -> list[Command]:
        posting = [] if self._posting is None else [self._post_command()]
        return [*self._account_commands(), *posting]

    def _post_command(self) -> Command:
        return Command(
            "post",
            "[<account>] [public|unlisted|private|direct] <text>",
            "Post to the fediverse (visibility: your account's default unless you name one)",
            self.post,
            min_args=1,
            max_args=None,
            dm_only=True,
            refused_outside_dm=True,
        )

    def _account_commands(self) -> list[Command]:
        return [
            Command("help", "", "Show this help", self.help, max_args=None),
            Command(
                "connect",
                "<instance> [interactive|scopes]",
                "Connect a fediverse account (the bot sends you a link in a DM); with `interactive`, also "
                "allow replying, favouriting, boosting and answering follow requests from here",
                self.connect,
                min_args=1,
                max_args=8,
                dm_only=True,
            ),
            Command(
                "allow-actions",
                "[<account>]",
                "Let the bot act for a read-only account (reply, favourite, boost, follow requests): a new "
                "authorization whose token replaces the current one, which is revoked",
                self.allow_actions,
                max_args=1,
                dm_only=True,
            ),
            Command(
                "code",
                "<code>",
                "Finish connecting with the code the instance showed you (or just paste the code)",
                self.code,
                min_args=1,
                max_args=1,
                dm_only=True,
            ),
            Command("cancel", "", "Drop a connection that waits for its code", self.cancel, dm_only=True),
            Command(
                "status",
                "",
                "List your connected accounts and their relay state",
                self.status,
                aliases=("list",),
                dm_only=True,
            ),
            Command(
                "revoke",
                "[<account>|all]",
                "Disconnect an account: revoke the bot's access on the server and delete it here",
                self.revoke,
                max_args=1,
                dm_only=True,
            ),
            Command(
                "notify",
                "[<account>] <types…|all>",
                "Choose which notification types to relay (mention, follow, favourite, reblog, …)",
                self.notify,
                min_args=1,
                max_args=16,
                dm_only=True,
            ),
            Command("pause", "[<account>]", "Stop relaying for now", self.pause, max_args=1, dm_only=True),
            Command(
                "resume",
                "[<account>]",
                "Relay again, including what arrived while paused",
                self.resume,
                max_args=1,
                dm_only=True,
            ),
            Command(
                "forget-me",
                "[confirm]",
                "Revoke all your accounts and delete everything the bot stores about you",
                self.forget_me,
                max_args=1,
                dm_only=True,
            ),
        ]

    async def help(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        intro = RichText.text(
            "I relay notifications from your fediverse account (GoToSocial, Mastodon, …) into this chat.\n"
            f"Start with: {ctx.prefix} connect your.instance\n"
        )
        await ctx.reply(intro + self.registry.help(ctx.prefix))

    async def post(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        assert self._posting is not None  # registered only with a posting service
        await self._posting.post(ctx, ctx.event_id, after_command_words(ctx.body) or " ".join(args))

    async def connect(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        started = await self._flows.start(ctx.sender, args[0], args[1:], ctx.room_id)
        await self._reply_started(ctx, started)

    async def allow_actions(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        selected = select_accounts(await self._accounts.for_user(ctx.sender), args[0] if args else None)
        if len(selected) != 1:
            raise CommandError("One account at a time, please: name it by number or @handle.")
        account = selected[0]
        if can_act(account.scopes, account.software):
            await ctx.reply(RichText.text(f"@{account.acct} can already act; nothing to do."))
            return
        # What the account relays with stays as it is; the flow adds the action scopes to it.
        kept = tuple(s for s in account.scopes.split() if s in KNOWN_SCOPES)
        started = await self._flows.start(
            ctx.sender, account.instance, kept, ctx.room_id, with_actions=True, upgrades=account.id
        )
        await self._reply_started(
            ctx,
            started,
            f"Sign in as @{account.acct} (if you sign in as another one, nothing is changed). The new "
            "access replaces the current one; I then revoke the old token.",
        )

    async def _reply_started(self, ctx: CommandContext, started: StartedFlow, note: str = "") -> None:
        minutes = _minutes_left(started.expires_at, self._clock())
        software = f" ({started.software})" if started.software else ""
        extra = [RichText.text(note)] if note else []
        if started.with_actions:
            extra.append(
                RichText.text(
                    "These scopes let me post replies, favourite, boost and answer follow requests for you, "
                    "only when you ask me to from this chat."
                )
            )
        await ctx.reply(
            RichText.lines(
                [
                    join("To connect your account on ", bold(started.instance.display), software + ":"),
                    join("1. Open ", link(started.authorize_url)),
                    RichText.text("2. Sign in and allow access (scopes: " + " ".join(started.scopes) + ")."),
                    RichText.text(
                        "3. Paste the code the page shows you here, as a message on its own. "
                        + _code_lifetime(started.code_minutes)
                        + f"; this request after {minutes} minutes."
                    ),
                    join("To stop: ", code(f"{ctx.prefix} cancel")),
                ]
                + extra
                + (
                    [RichText.text("(This replaces your earlier request, which waited for its code.)")]
                    if started.replaced_earlier
                    else []
                )
            )
        )

    async def code(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        await self.submit_code(ctx, args[0])

    async def submit_code(self, ctx: CommandContext, pasted: str) -> None:
        found = extract_code(pasted)
        if found is None:
            raise CommandError(
                "That does not look like an authorization code. Copy the whole code the instance showed you."
            )
        connected = await self._flows.complete(ctx.sender, ctx.room_id, found)
        lines = [
            join("Connected as ", bold("@" + connected.account.acct), "."),
            RichText.text(f"Granted scopes: {connected.account.scopes}. New notifications will appear here."),
        ]
        if connected.acting_allowed:
            lines.append(
                RichText.text(
                    "I can act for this account: reply to a relayed post, react to favourite or boost it, "
                    "and answer follow requests."
                )
            )
        if not connected.streaming_possible:
            lines.append(
                RichText.text(
                    f"With these scopes {connected.instance.display} does not allow live streaming (it "
                    "needs the `read` scope for that), so I check for new notifications every few minutes "
                    "instead."
                )
            )
        await ctx.reply(RichText.lines(lines))

    async def cancel(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        dropped = await self._flows.cancel(ctx.sender)
        await ctx.reply(
            RichText.text("Cancelled: the connection request was dropped.")
            if dropped
            else RichText.text("Nothing to cancel: no connection is waiting for a code.")
        )

    async def status(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        accounts = await self._accounts.for_user(ctx.sender)
        pending = await self._flows.has_pending(ctx.sender)
        if not accounts:
            text = f"You have no connected accounts. Connect one with: {ctx.prefix} connect your.instance"
            if pending:
                text += "\nA connection is waiting for its code."
            await ctx.reply(RichText.text(text))
            return
        lines = [RichText.text("Your accounts:")]
        lines += [_account_line(i, account) for i, account in enumerate(accounts, 1)]
        if pending:
            lines.append(RichText.text("A connection is waiting for its code."))
        await ctx.reply(RichText.lines(lines))

    async def revoke(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        outcomes = await self._accounts.revoke(ctx.sender, args[0] if args else None)
        await ctx.reply(RichText.lines([_revoke_line(o) for o in outcomes]))

    async def notify(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        selector = args[0] if _is_account_selector(args[0]) else "all"
        type_args = args[1:] if _is_account_selector(args[0]) else args
        types = parse_types(type_args)
        changed = await self._accounts.set_types(ctx.sender, selector, types)
        what = "every notification type" if types is None else ", ".join(types)
        await ctx.reply(RichText.text(f"Relaying {what} for " + ", ".join("@" + a for a in changed) + "."))

    async def pause(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        changed = await self._accounts.set_paused(ctx.sender, args[0] if args else "all", paused=True)
        await ctx.reply(_changed("Paused", changed, f"Resume with: {ctx.prefix} resume"))

    async def resume(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        changed = await self._accounts.set_paused(ctx.sender, args[0] if args else "all", paused=False)
        await ctx.reply(_changed("Relaying again for", changed, "Anything that arrived meanwhile follows."))

    async def forget_me(self, ctx: CommandContext, args: tuple[str, ...]) -> None:
        if args != ("confirm",):
            await ctx.reply(
                RichText.text(
                    "This revokes every connected account, deletes all I store about you, and I leave "
                    "this chat. "
                    f"To go ahead, send: {ctx.prefix} forget-me confirm"
                )
            )
            return
        outcomes = await self._accounts.forget(ctx.sender)
        lines = [_revoke_line(o) for o in outcomes]
        lines.append(RichText.text(FORGOTTEN))
        await ctx.reply(RichText.lines(lines))
        if self._dms is not None:
            await self._dms.leave(ctx.sender, ctx.room_id)


def _code_lifetime(minutes: int | None) -> str:
    """Per server: GoToSocial keeps a code about 5 minutes, Mastodon 10; an unknown server, unsaid."""
    if minutes is None:
        return "Codes are only valid for a few minutes, so paste it soon"
    return f"Codes expire after about {minutes} minutes"


def _account_line(index: int, account: AccountRecord) -> RichText:
    state = {
        AccountState.ACTIVE: "relaying",
        AccountState.PAUSED: "paused",
        AccountState.BROKEN: "not working: the server rejected the token; connect again",
    }[account.state]
    types = "all types" if account.notify_types is None else ", ".join(account.notify_types)
    can = can_act(account.scopes, account.software)  # the server's own scope names count where known
    acting = "can act" if can else "read-only (allow-actions lets it act)"
    return join(
        f"{index}. ", bold("@" + account.acct), f" — {state}; {types}; {acting}; scopes {account.scopes}"
    )


def _revoke_line(outcome: RevokeOutcome) -> RichText:
    if outcome.kept_for_others:
        others = "another connection" if outcome.kept_for_others == 1 else "other connections"
        return RichText.text(
            f"Deleted @{outcome.acct} here. The token stays valid on the server because {others} to the "
            f"same account through this bot use{'s' if outcome.kept_for_others == 1 else ''} it "
            f"({outcome.instance.display} gives every connection of one account the same token). "
            "To cut off all of them: " + outcome.manual_revoke_hint
        )
    if outcome.revoked_on_server:
        return RichText.text(f"Revoked @{outcome.acct}: the token is revoked on the server and deleted here.")
    return RichText.text(
        f"Deleted @{outcome.acct} here, but the server did not revoke the token ({outcome.problem}). "
        + outcome.manual_revoke_hint
    )


def _changed(verb: str, accts: Sequence[str], tail: str) -> RichText:
    if not accts:
        return RichText.text("No account changed (accounts that stopped working must be connected again).")
    return RichText.text(f"{verb} " + ", ".join("@" + a for a in accts) + ". " + tail)
