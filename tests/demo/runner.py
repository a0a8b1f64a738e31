"""The demo: the bot at work without any account, run from a checkout with `python -m tests.demo`.

It starts a throwaway Synapse and the fake GoToSocial on 127.0.0.1, runs the bot against them in this
process, and plays a person through connect → notifications → revoke (`tests.demo.conversation`),
printing the conversation. Everything lives in a temporary directory, deleted afterwards unless `--keep`.

It lives under `tests/` because it is made of test helpers (the Synapse runner, the Matrix client playing
the person, the fake GoToSocial) and needs the test extra; the installed package never imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import TextIO

from bot.app import serve
from bot.config import Config, LoggingConfig, load_config
from bot.log import RedactingFilter, redact, setup_logging
from tests.demo.conversation import EMAIL, PASSWORD, DemoFailed, Stage, Transcript, play
from tests.e2e.human import Human
from tests.e2e.synapse import Synapse, SynapseProcess
from tests.fakes.gotosocial import FakeGoToSocial

__all__ = ["CHECKOUT_HINT", "main", "missing_requirement", "run_demo"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the test extra is missing
SHUTDOWN_SECONDS = 30.0

CHECKOUT_HINT = (
    "The demo runs from a checkout with the test extra:\n"
    "  git clone https://github.com/gts-bot/gts-bot && cd gts-bot\n"
    "  python3 -m venv .venv && .venv/bin/pip install -e '.[test]'\n"
    "  .venv/bin/python -m tests.demo"
)


DEMO_ONLY = (
    "Demo only: the bot may use plain http:// and loopback addresses (fediverse.allow_http and",
    "fediverse.allow_private_addresses); a real deployment leaves both off, so nobody can make the",
    "bot reach a private network. The bot's Matrix send rate limit is lifted, as for a real bot.",
)


def missing_requirement(
    find_spec: Callable[[str], ModuleSpec | None] = importlib.util.find_spec,
) -> str | None:
    """Why the demo cannot run here (with the hint how to fix it), or None when it can."""
    if find_spec("synapse") is None:
        return f"matrix-synapse is not installed (it comes with the test extra).\n{CHECKOUT_HINT}"
    return None


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.demo",
        description="Try gts-bot without any account: a throwaway Synapse and a fake GoToSocial on "
        "loopback, and a person played through connect, notifications and revoke.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep the temporary directory (bot log, bot database, Synapse log) and print where it is.",
    )
    return parser.parse_args(argv)


def demo_config(homeserver: str, bot_user: str, bot_password: str, data_dir: Path) -> Config:
    """The bot's configuration: only what the demo needs, never the caller's GTS_BOT_* environment."""
    env = {
        "GTS_BOT_MATRIX__HOMESERVER": homeserver,
        "GTS_BOT_MATRIX__USER_ID": bot_user,
        "GTS_BOT_MATRIX__PASSWORD": bot_password,
        "GTS_BOT_DATA_DIR": str(data_dir),
        # Demo only: the fake GoToSocial is plain http on loopback, which a real deployment refuses.
        "GTS_BOT_FEDIVERSE__ALLOW_HTTP": "true",
        "GTS_BOT_FEDIVERSE__ALLOW_PRIVATE_ADDRESSES": "true",
        "GTS_BOT_RELAY__POLL_INTERVAL": "10",
    }
    return load_config(None, env)


@contextlib.contextmanager
def bot_log(path: Path) -> Iterator[RedactingFilter]:
    """Send all logging (INFO and up, redacted) to `path` instead of the console; restore afterwards."""
    root = logging.getLogger()
    level = root.level
    with path.open("a", encoding="utf-8") as stream:
        redactor = setup_logging(LoggingConfig(level="INFO", format="text"), stream=stream)
        try:
            yield redactor
        finally:
            for handler in [h for h in root.handlers if getattr(h, "stream", None) is stream]:
                root.removeHandler(handler)
            root.setLevel(level)


async def _new_bot_account(synapse: Synapse) -> tuple[str, str]:
    password = secrets.token_hex(12)
    user_id: str = await synapse.create_account(f"gtsbot-{secrets.token_hex(4)}", password)
    await synapse.override_ratelimit(user_id, messages_per_second=0, burst_count=0)
    return user_id, password


async def _play_with_bot(stage: Stage, config: Config) -> float:
    """Run the bot while the script plays; fail at once if the bot stops by itself."""
    stop = asyncio.Event()
    bot_task = asyncio.create_task(serve(config, stop), name="demo-bot")
    script = asyncio.create_task(play(stage), name="demo-script")
    try:
        await asyncio.wait({bot_task, script}, return_when=asyncio.FIRST_COMPLETED)
        if not script.done():
            script.cancel()
            error = bot_task.exception()
            raise DemoFailed(f"the bot stopped by itself ({type(error).__name__ if error else 'no error'})")
        return script.result()
    finally:
        script.cancel()
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(bot_task, SHUTDOWN_SECONDS)


async def _demo(synapse: Synapse, workdir: Path, t: Transcript, redactor: RedactingFilter) -> float:
    bot_user, bot_password = await _new_bot_account(synapse)
    redactor.add_secret(bot_password)
    redactor.add_secret(PASSWORD)
    human = await Human.create(synapse, workdir / "alice-matrix-store", "alice")
    redactor.add_secret(human.password)
    redactor.add_secret(human.access_token)
    try:
        async with FakeGoToSocial() as gts:
            gts.add_user("alice", EMAIL, PASSWORD)
            gts.add_user("bob", "bob@example.org", secrets.token_hex(12))
            t.line(f"Fake GoToSocial is up at {gts.base_url} with the accounts alice and bob.")
            t.line(f"On Synapse: the bot is {bot_user}, alice is {human.user_id}.")
            for line in DEMO_ONLY:
                t.line(line)
            config = demo_config(synapse.base_url, bot_user, bot_password, workdir / "bot-data")
            stage = Stage(human=human, room="", bot_user=bot_user, gts=gts, transcript=t)
            return await _play_with_bot(stage, config)
    finally:
        await human.close()


def run_demo(*, keep: bool = False, out: TextIO | None = None) -> int:
    """Run the whole demo; returns the process exit code."""
    out = sys.stdout if out is None else out
    problem = missing_requirement()
    if problem is not None:
        print(f"demo: {problem}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    t = Transcript(out)
    workdir = Path(tempfile.mkdtemp(prefix="gts-bot-demo-"))
    log_path = workdir / "bot.log"
    keep_logs = True  # a failure keeps the directory for its logs; success and Ctrl-C do not
    try:
        t.line("Starting a throwaway Synapse homeserver on 127.0.0.1 (this takes a few seconds)…")
        process = SynapseProcess(_mkdir(workdir / "synapse"))
        try:
            synapse = process.start()
            t.line(f"Synapse is up at {synapse.base_url} after {process.startup_seconds:.1f} s.")
            with bot_log(log_path) as redactor:
                seconds = asyncio.run(_demo(synapse, workdir, t, redactor))
        finally:
            process.stop()
        keep_logs = False
        t.line()
        t.line(f"Done: in {seconds:.0f} s alice connected, got her notifications, chose what to relay,")
        t.line("paused, resumed and revoked the bot's access. To run the bot for real, see the README.")
        return EXIT_OK
    except DemoFailed as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        summary = redact(str(exc).strip().partition("\n")[0])
        print(f"demo failed unexpectedly: {type(exc).__name__}: {summary}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        keep_logs = False
        raise
    finally:
        _clean_up(workdir, log_path, keep=keep or keep_logs, out=sys.stderr if keep_logs else out)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clean_up(workdir: Path, log_path: Path, *, keep: bool, out: TextIO) -> None:
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    print(f"\nKept {workdir}:", file=out)
    print(f"  bot log:     {log_path}", file=out)
    print(f"  Synapse log: {workdir / 'synapse' / 'homeserver.log'}", file=out)
    print(f"  bot data:    {workdir / 'bot-data'}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        return run_demo(keep=args.keep)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
