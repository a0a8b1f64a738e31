"""Helpers for the reliability tests: the bot as a real subprocess, a steady notification source, a slow
link to the homeserver, and a reading of everything the bot ever sent into a room (from the server's
history, decrypted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nio
from aiohttp import web

from tests.e2e.human import Human
from tests.fakes.gotosocial import FakeGoToSocial
from tests.waiting import WaitTimeout, wait_until

RUNNING_LINE = "gts-bot is running as"
MARKER = re.compile(r"\bnote-\d{4}\b")


def marker(index: int) -> str:
    return f"note-{index:04d}"


def bot_env(homeserver: str, bot_user: str, password: str, data_dir: Path) -> dict[str, str]:
    """The environment of `python -m bot run`: the inherited one without GTS_BOT_* or proxies, plus ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GTS_BOT_") and not k.lower().endswith("_proxy")
    }
    env.update(
        {
            "GTS_BOT_CONFIG": "",
            "GTS_BOT_MATRIX__HOMESERVER": homeserver,
            "GTS_BOT_MATRIX__USER_ID": bot_user,
            "GTS_BOT_MATRIX__PASSWORD": password,
            "GTS_BOT_DATA_DIR": str(data_dir),
            "GTS_BOT_FEDIVERSE__ALLOW_HTTP": "true",
            "GTS_BOT_FEDIVERSE__ALLOW_PRIVATE_ADDRESSES": "true",
            "GTS_BOT_RELAY__POLL_INTERVAL": "10",
            "GTS_BOT_LOGGING__LEVEL": "INFO",
        }
    )
    return env


@dataclass
class BotProcess:
    """One `python -m bot run` subprocess; its stdout and stderr go to `log_path`."""

    proc: asyncio.subprocess.Process
    log_path: Path
    log_offset: int  # where this run's output starts in the (shared, appended) log file

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path, log_path: Path) -> BotProcess:
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", cwd=cwd, env=env, stdout=log, stderr=log
            )
        return cls(proc, log_path, offset)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    async def wait_running(self, timeout: float = 120.0) -> None:
        """Until the bot logs that it runs. Fails if it exits first."""

        def running() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"the bot exited with {self.proc.returncode}:\n{self.tail()}")
            return RUNNING_LINE in self.output()

        await wait_until(running, timeout=timeout, interval=0.05, what=f"the bot to start ({self.log_path})")

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the bot."""
        if self.proc.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            stuck = f"the bot did not stop within {timeout:.0f} s of SIGTERM:\n{self.tail()}"
            raise AssertionError(stuck) from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


_HOP_BY_HOP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}
)


class SlowLink:
    """A reverse proxy on loopback in front of the homeserver: a slow network for room message sends.

    Each send is held `send_delay()` seconds on its way to the homeserver, and its answer another
    `send_delay()` seconds after the homeserver stored the event. A bot killed in the first window has not
    sent the message (a restart must still send it); killed in the second, it sent it without learning so
    (a restart must not send it twice). Every other request passes straight through."""

    def __init__(self, upstream: str, send_delay: Callable[[], float]) -> None:
        self._upstream = upstream.rstrip("/")
        self._send_delay = send_delay
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.base_url = ""
        self.send_requests = 0  # room message sends that reached the link
        self.sends = 0  # room message sends the homeserver answered

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        is_send = request.method == "PUT" and "/send/" in request.path
        body = await request.read()
        if is_send:
            self.send_requests += 1
            await asyncio.sleep(self._send_delay())
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._http.request(
            request.method,
            self._upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            answer = await upstream.read()
            status = upstream.status
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if is_send:
            self.sends += 1
            await asyncio.sleep(self._send_delay())
        return web.Response(status=status, body=answer, headers=out)


@dataclass
class MentionSource:
    """Creates alice's mention notifications, each with a unique marker."""

    gts: FakeGoToSocial
    username: str
    interval: float  # the pace of the outage tests' steady stream
    created: list[str] = field(default_factory=list)

    def notify_one(self) -> str:
        text = marker(len(self.created))
        self.gts.notify(self.username, "mention", "bob", status_text=f"{text} from the fediverse")
        self.created.append(text)
        return text

    async def produce(self, count: int, pause: Callable[[], float]) -> None:
        """Create `count` notifications, `pause()` seconds apart (the pace varies; nothing depends on it)."""
        for _ in range(count):
            self.notify_one()
            await asyncio.sleep(pause())


@dataclass(frozen=True)
class RoomReading:
    bodies: tuple[str, ...]  # decrypted message bodies from the sender, oldest first
    undecryptable: tuple[str, ...]  # event ids of the sender's events the reader cannot decrypt

    def marker_counts(self) -> Counter[str]:
        return Counter(m for body in self.bodies for m in MARKER.findall(body))


async def read_room(human: Human, room_id: str, sender: str) -> RoomReading:
    """Everything `sender` ever sent to the room, from the server's history (not the sync window)."""
    await human.sync(0)  # room keys arrive as to-device messages with the sync
    client = human.client
    token: str = client.next_batch
    bodies: list[str] = []
    undecryptable: list[str] = []
    while True:
        resp = await client.room_messages(room_id, start=token, limit=100)
        assert isinstance(resp, nio.RoomMessagesResponse), f"/messages failed: {resp}"
        for event in resp.chunk:
            if getattr(event, "sender", None) != sender:
                continue
            if isinstance(event, nio.MegolmEvent):
                undecryptable.append(event.event_id)
            elif isinstance(event, nio.RoomMessage):
                bodies.append(_body(event))
        if not resp.chunk or not resp.end:
            break
        token = resp.end
    bodies.reverse()
    return RoomReading(tuple(bodies), tuple(undecryptable))


def _body(event: Any) -> str:
    body = getattr(event, "body", "")
    return body if isinstance(body, str) else ""


async def wait_for_markers(
    human: Human, room_id: str, sender: str, expected: Iterable[str], timeout: float
) -> RoomReading:
    """Read the room until every expected marker is there (or the time is up); returns the last reading,
    which the caller checks (a timeout shows up as lost markers)."""
    wanted = set(expected)
    last: list[RoomReading] = []

    async def complete() -> bool:
        last[:] = [await read_room(human, room_id, sender)]
        return wanted <= set(last[0].marker_counts())

    with contextlib.suppress(WaitTimeout):
        await wait_until(complete, timeout=timeout, interval=0.5, what="every marker in the room")
    return last[0]


def exactly_once_problems(reading: RoomReading, expected: Iterable[str]) -> list[str]:
    """Human-readable problems: lost markers, duplicated ones, unexpected ones, unreadable events."""
    wanted = list(expected)
    counts = reading.marker_counts()
    problems = []
    lost = [m for m in wanted if counts[m] == 0]
    if lost:
        problems.append(f"lost {len(lost)}: {lost}")
    duplicated = {m: n for m, n in sorted(counts.items()) if n > 1}
    if duplicated:
        problems.append(f"duplicated {len(duplicated)}: {duplicated}")
    unknown = sorted(set(counts) - set(wanted))
    if unknown:
        problems.append(f"never created: {unknown}")
    if reading.undecryptable:
        problems.append(f"{len(reading.undecryptable)} undecryptable: {list(reading.undecryptable)}")
    return problems
