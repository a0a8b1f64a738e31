"""The whole bot, in-process, against the real Synapse and a fake GoToSocial; and a person talking to it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app import serve
from bot.config import Config, LoggingConfig, load_config
from bot.log import setup_logging
from tests.e2e.human import Human
from tests.e2e.synapse import Synapse
from tests.fakes.gotosocial import FakeGoToSocial

URL = re.compile(r"https?://\S+/oauth/authorize\?\S+")


def bot_config(synapse: Synapse, bot_user: str, password: str, data_dir: Path, **extra: str) -> Config:
    env = {
        "GTS_BOT_MATRIX__HOMESERVER": synapse.base_url,
        "GTS_BOT_MATRIX__USER_ID": bot_user,
        "GTS_BOT_MATRIX__PASSWORD": password,
        "GTS_BOT_DATA_DIR": str(data_dir),
        "GTS_BOT_FEDIVERSE__ALLOW_HTTP": "true",
        "GTS_BOT_FEDIVERSE__ALLOW_PRIVATE_ADDRESSES": "true",
        "GTS_BOT_RELAY__POLL_INTERVAL": "10",
        **extra,
    }
    return load_config(None, env)


@dataclass
class RunningBot:
    config: Config
    task: asyncio.Task[None]
    stop: asyncio.Event
    log: io.StringIO

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@asynccontextmanager
async def run_bot(config: Config) -> AsyncIterator[RunningBot]:
    """Run the bot with DEBUG logs captured (through the production redaction filter) in `.log`."""
    stream = io.StringIO()
    setup_logging(LoggingConfig(level="DEBUG", format="text"), stream=stream)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    running = RunningBot(config, task, stop, stream)
    try:
        yield running
    finally:
        if not task.done():
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "stream", None) is stream:
                root.removeHandler(handler)


async def new_bot_account(synapse: Synapse) -> tuple[str, str]:
    password = secrets.token_hex(12)
    user_id = await synapse.create_account(f"gtsbot-{secrets.token_hex(4)}", password)
    # The bot's own send limit is lifted, as the README tells operators to do.
    await synapse.override_ratelimit(user_id, messages_per_second=0, burst_count=0)
    return user_id, password


async def new_bot(synapse: Synapse, data_dir: Path, **extra: str) -> tuple[str, Config]:
    """A new bot account on `synapse`, and the config that runs it with its data in `data_dir`."""
    bot_user, password = await new_bot_account(synapse)
    return bot_user, bot_config(synapse, bot_user, password, data_dir, **extra)


def text_of(event: Any) -> str:
    body = getattr(event, "body", None)
    assert isinstance(body, str), f"not a decrypted message: {event!r}"
    return body


async def next_text(human: Human, room_id: str, bot_user: str, timeout: float = 60.0) -> str:
    return text_of(await human.wait_message(room_id, bot_user, timeout))


async def say(human: Human, room_id: str, bot_user: str, body: str, timeout: float = 60.0) -> str:
    await human.send_text(room_id, body)
    return await next_text(human, room_id, bot_user, timeout)


async def open_dm(human: Human, bot_user: str, *, encrypted: bool = True) -> str:
    """The person opens a DM with the bot and waits for its greeting."""
    room = await human.create_dm(bot_user, encrypted=encrypted)
    greeting = await next_text(human, room, bot_user)
    assert "connect" in greeting
    return room


async def connect_account(
    human: Human, room: str, bot_user: str, gts: FakeGoToSocial, email: str, password: str
) -> tuple[str, str]:
    """`connect` → open the URL and allow (as a browser would) → paste the code. Returns (reply, code)."""
    instructions = await say(human, room, bot_user, f"!gts connect {gts.base_url}")
    match = URL.search(instructions)
    assert match, instructions
    code = await gts.authorize(match.group(0), email, password)
    reply = await say(human, room, bot_user, code)
    return reply, code
