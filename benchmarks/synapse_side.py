"""Homeserver side of the Synapse relay benchmark: users, DM rooms, reading back what arrived."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.matrix.adapter import MatrixAdapter
from bot.matrix.types import RoomId
from tests.e2e.synapse import Synapse


@dataclass(frozen=True)
class MatrixUser:
    user_id: str
    token: str = field(repr=False)
    room_id: str


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_users(synapse: Synapse, bot: MatrixAdapter, count: int) -> list[MatrixUser]:
    """`count` users, each with an unencrypted DM room with the bot that the bot has joined."""
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> MatrixUser:
        async with gate:
            user_id, token = await synapse.register_user(f"bench{i}", secrets.token_hex(12))
            resp = await synapse.client_request(
                token,
                "POST",
                "/_matrix/client/v3/createRoom",
                {"preset": "trusted_private_chat", "is_direct": True, "invite": [bot.user_id]},
            )
            room_id = str(resp.raise_for_status().json()["room_id"])
            await bot.join(RoomId(room_id))
            return MatrixUser(user_id, token, room_id)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def visible_events(synapse: Synapse, user: MatrixUser, sender: str) -> dict[str, int]:
    """event id → origin_server_ts (ms) of `sender`'s messages, as `user` reads the room's history."""
    found: dict[str, int] = {}
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(user.room_id)}/messages"
    params: dict[str, str] = {"dir": "b", "limit": "500"}
    async with httpx.AsyncClient(base_url=synapse.base_url, trust_env=False, timeout=30.0) as http:
        while True:
            resp = await http.get(path, params=params, headers={"Authorization": f"Bearer {user.token}"})
            page = resp.raise_for_status().json()
            for event in page.get("chunk", []):
                if event.get("type") == "m.room.message" and event.get("sender") == sender:
                    found[event["event_id"]] = int(event["origin_server_ts"])
            if not page.get("chunk") or "end" not in page:
                return found
            params["from"] = page["end"]


class SyncWatchers:
    """Each user long-polls /sync as a client would; records when each bot event first reaches them."""

    FILTER = (
        '{"room": {"timeline": {"limit": 100, "types": ["m.room.message"]}, "state": {"types": []},'
        ' "ephemeral": {"types": []}, "account_data": {"types": []}},'
        ' "presence": {"types": []}, "account_data": {"types": []}}'
    )

    def __init__(self, base_url: str, users: list[MatrixUser], bot_user: str) -> None:
        self.seen: dict[str, float] = {}
        self._users, self._bot = users, bot_user
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(
            base_url=base_url,
            trust_env=False,
            timeout=60.0,
            limits=httpx.Limits(max_connections=len(users) + 4),
        )

    async def start(self) -> None:
        since = await asyncio.gather(*(self._sync(u, None, 0) for u in self._users))
        self._tasks = [
            asyncio.create_task(self._watch(u, s)) for u, s in zip(self._users, since, strict=True)
        ]

    async def _sync(self, user: MatrixUser, since: str | None, timeout_ms: int) -> str:
        params = {"timeout": str(timeout_ms), "filter": self.FILTER} | ({"since": since} if since else {})
        resp = await self._http.get(
            "/_matrix/client/v3/sync", params=params, headers={"Authorization": f"Bearer {user.token}"}
        )
        at = time.time()
        body = resp.raise_for_status().json()
        for room in body.get("rooms", {}).get("join", {}).values():
            for event in room.get("timeline", {}).get("events", []):
                if event.get("sender") == self._bot and since is not None:
                    self.seen.setdefault(event["event_id"], at)
        return str(body["next_batch"])

    async def _watch(self, user: MatrixUser, since: str) -> None:
        while True:
            since = await self._sync(user, since, 10_000)

    async def stop(self) -> int:
        """Stop watching; the number of watchers that had failed."""
        failed = sum(1 for t in self._tasks if t.done() and not t.cancelled() and t.exception() is not None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
        return failed


# --- the users' clients, in their own process so the bot's CPU is measured alone -------------------------


async def serve_watchers() -> None:
    """stdin: one JSON line {base_url, bot, users: [[user_id, token, room_id]]}, then any line to stop.
    stdout: {"ready": true}, then {event_id: first seen at (wall clock)}."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    setup = json.loads(await reader.readline())
    users = [MatrixUser(*u) for u in setup["users"]]
    watchers = SyncWatchers(setup["base_url"], users, setup["bot"])
    await watchers.start()
    print(json.dumps({"ready": True}), flush=True)
    await reader.readline()
    failed = await watchers.stop()
    print(json.dumps({"seen": watchers.seen, "failed": failed}), flush=True)


class WatcherProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, base_url: str, users: list[MatrixUser], bot_user: str) -> WatcherProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.synapse_side",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        setup = {
            "base_url": base_url,
            "bot": bot_user,
            "users": [[u.user_id, u.token, u.room_id] for u in users],
        }
        proc.stdin.write((json.dumps(setup) + "\n").encode())
        await proc.stdin.drain()
        json.loads(await proc.stdout.readline())
        return cls(proc)

    async def stop(self) -> tuple[dict[str, float], int]:
        """(event id → first seen at, failed watchers)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        result = json.loads(await self.proc.stdout.readline())
        await self.proc.wait()
        return dict(result["seen"]), int(result["failed"])


if __name__ == "__main__":
    asyncio.run(serve_watchers())
