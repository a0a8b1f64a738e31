"""The scripted conversation the demo plays: a person talks to the bot while "the fediverse" acts.

The person is a real Matrix client (`tests/e2e/human.py`), the fediverse the fake GoToSocial
(`tests/fakes/gotosocial/`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TextIO

from tests.e2e.human import Human
from tests.fakes.gotosocial import FakeGoToSocial

__all__ = ["DemoFailed", "Stage", "Transcript", "play"]

REPLY_TIMEOUT = 30.0
QUIET_SECONDS = 3.0
EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"
ALICE_POST = "Meetup on Friday at 7, all welcome!"
AUTHORIZE_URL = re.compile(r"https?://\S+/oauth/authorize\?\S+")


class DemoFailed(Exception):
    """The bot did not do what the script expects; the message says what was missing (never a secret)."""


@dataclass(frozen=True)
class Transcript:
    """Prints the conversation as it happens: who says what, and what happens off-chat."""

    out: TextIO
    user: str = "alice"

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        self.line()
        self.line(f"── {text} " + "─" * max(3, 72 - len(text)))

    def narrate(self, text: str) -> None:
        self.line(f"  ({text})")

    def said(self, speaker: str, listener: str, text: str) -> None:
        label = f"{speaker} → {listener}:  "
        first, *rest = text.splitlines() or [""]
        self.line(label + first)
        for more in rest:
            self.line(" " * len(label) + more)


@dataclass
class Stage:
    """The cast: the person (a Matrix client) in a DM with the bot, and the fake fediverse server."""

    human: Human
    room: str
    bot_user: str
    gts: FakeGoToSocial
    transcript: Transcript
    heard: list[str] = field(default_factory=list)

    async def hear(self, what: str, seconds: float = REPLY_TIMEOUT) -> str:
        try:
            event = await self.human.wait_message(self.room, self.bot_user, seconds)
        except AssertionError:
            raise DemoFailed(f"the bot did not answer within {seconds:.0f} s (waiting for {what})") from None
        body = getattr(event, "body", None)
        if not isinstance(body, str):
            raise DemoFailed(f"a message from the bot could not be decrypted (waiting for {what})")
        self.transcript.said("bot", self.transcript.user, body)
        self.heard.append(body)
        return body

    async def say(self, text: str, *, shown: str | None = None) -> None:
        await self.human.send_text(self.room, text)
        self.transcript.said(self.transcript.user, "bot", text if shown is None else shown)

    async def ask(self, text: str, expect: str, *, shown: str | None = None) -> str:
        await self.say(text, shown=shown)
        return expecting(await self.hear(repr(expect)), expect)

    async def quiet(self, seconds: float = QUIET_SECONDS) -> bool:
        return bool(await self.human.no_more_messages(self.room, self.bot_user, wait=seconds))


def expecting(reply: str, needle: str) -> str:
    if needle not in reply:
        first = reply.splitlines()[0] if reply else "(nothing)"
        raise DemoFailed(f"expected the bot to say {needle!r}, but it said: {first}")
    return reply


async def greet(stage: Stage) -> None:
    stage.transcript.heading("alice opens an encrypted direct chat with the bot")
    stage.room = await stage.human.create_dm(stage.bot_user, encrypted=True)
    await stage.hear("the greeting")


async def connect(stage: Stage) -> None:
    t, gts = stage.transcript, stage.gts
    t.heading("connect")
    await stage.ask("!gts status", "no connected accounts")
    instructions = await stage.ask(f"!gts connect {gts.base_url}", "/oauth/authorize?")
    match = AUTHORIZE_URL.search(instructions)
    if match is None:
        raise DemoFailed("the connect instructions contain no authorize link")
    t.narrate("alice opens the link, signs in to the fake GoToSocial and clicks Allow; the page shows a code")
    code = await gts.authorize(match.group(0), EMAIL, PASSWORD)
    await stage.ask(code, "Connected as @alice@", shown=f"[the {len(code)}-character code from that page]")
    if len(gts.active_tokens("alice")) != 1:
        raise DemoFailed("the fake GoToSocial does not show exactly one token for alice after connecting")


async def notifications(stage: Stage) -> None:
    t, gts = stage.transcript, stage.gts
    t.heading("notifications")
    t.narrate("bob mentions alice on the fediverse")
    gts.notify("alice", "mention", "bob", status_text="@alice are you coming to the meetup on Friday?")
    expecting(await stage.hear("the mention"), "mentioned you")

    t.narrate("carol@social.example favourites a post of alice's, then asks to follow her")
    gts.notify("alice", "favourite", "carol@social.example", status_text=ALICE_POST)
    gts.notify("alice", "follow_request", "carol@social.example")
    # The relay may send these as one message or two, depending on how fast they arrive.
    seen = await stage.hear("the favourite")
    if "asked to follow" not in seen:
        seen += await stage.hear("the follow request")
    expecting(seen, "favourited your post")
    expecting(seen, "asked to follow you")
    await stage.ask("!gts status", "relaying")


async def choose_types(stage: Stage) -> None:
    t, gts = stage.transcript, stage.gts
    t.heading("only mentions, please")
    await stage.ask("!gts notify mention", "Relaying mention")
    t.narrate("dave@social.example favourites a post of alice's: not relayed any more")
    gts.notify("alice", "favourite", "dave@social.example", status_text=ALICE_POST)
    t.narrate("bob mentions alice again")
    gts.notify("alice", "mention", "bob", status_text="@alice the venue moved to the library")
    reply = expecting(await stage.hear("the second mention"), "mentioned you")
    if "favourited" in reply:
        raise DemoFailed("the bot relayed a favourite although alice asked for mentions only")


async def pause_and_resume(stage: Stage) -> None:
    t, gts = stage.transcript, stage.gts
    t.heading("pause and resume")
    await stage.ask("!gts pause", "Paused")
    t.narrate("bob mentions alice while relaying is paused")
    gts.notify("alice", "mention", "bob", status_text="@alice see you there!")
    if not await stage.quiet():
        raise DemoFailed("the bot relayed a notification while paused")
    t.narrate(f"{QUIET_SECONDS:.0f} seconds pass: nothing arrives")
    await stage.say("!gts resume")
    # The confirmation and the mention that waited may arrive in either order.
    both = await stage.hear("the resume confirmation") + await stage.hear("the mention that waited")
    expecting(both, "Relaying again")
    expecting(both, "mentioned you")


async def revoke(stage: Stage) -> None:
    t, gts = stage.transcript, stage.gts
    t.heading("revoke")
    await stage.ask("!gts revoke", "Revoked @alice@")
    if gts.active_tokens("alice"):
        raise DemoFailed("the fake GoToSocial still has an active token for alice after the revoke")
    t.narrate("the fake GoToSocial confirms: alice has no active token left")
    await stage.ask("!gts status", "no connected accounts")


async def play(stage: Stage) -> float:
    """Play the whole script; returns how long it took in seconds. Raises `DemoFailed`."""
    started = time.monotonic()
    for scene in (greet, connect, notifications, choose_types, pause_and_resume, revoke):
        await scene(stage)
    return time.monotonic() - started
