"""Relay benchmark (prints figures; not a test).

    .venv/bin/python -m benchmarks.relay [--accounts 1000] [--rate 50] [--seconds 20] [--idle 30]
    .venv/bin/python -m benchmarks.relay --synapse [--accounts 20] [--rate 5] [--seconds 20] [--idle 10]

The fake GoToSocial runs in a child process (`--serve-fake`, JSON lines over stdin/stdout) so the bot's CPU
and memory are measured alone. The bot side is the real RelayManager with a real SQLite database and a
recording Matrix sender. Figures:

- connect: time until every account has its stream open;
- idle cost: instance requests per account per hour, from the fake's request log over an idle period;
- latency p50/p99: notification created (wall clock in the fake) → `send_notice` called (wall clock here),
  for notifications sent on their own (grouped ones are counted but have no single creation time);
- CPU seconds per 1,000 notifications and peak RSS of the bot process (resource.getrusage);
- messages per notification under a homeserver rate limit (a sender allowing 0.2 sends/s, burst 10,
  that waits out the limit itself like the Matrix adapter does).

`--synapse` delivers instead through the real Matrix adapter to a throwaway real Synapse (unencrypted DM
rooms, the bot's rate limit lifted) and measures latency up to the event as each user reads it back; see
benchmarks/relay_synapse.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import FediverseConfig, RelayConfig
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import build_http_client
from bot.fediverse.instance import parse_instance
from bot.fediverse.streaming import build_stream_connector
from bot.relay.manager import RelayManager
from bot.relay.tuning import RelayTuning
from bot.store.db import create_engine, session_factory
from bot.store.keyring import KeyRing
from bot.store.migrate import upgrade
from bot.store.repositories import Repositories
from tests.fakes.matrix import RecordingMatrix

# --- the fake GoToSocial, in its own process ---------------------------------------------------------


async def serve_fake(accounts: int) -> None:
    from tests.fakes.gotosocial import FakeGoToSocial

    gts = FakeGoToSocial(ping_interval=30.0)
    await gts.start()
    tokens = []
    for i in range(accounts):
        gts.add_user(f"u{i}")
        tokens.append(gts.issue_token(f"u{i}"))
    ids = [gts.user(f"u{i}").account_id for i in range(accounts)]
    print(json.dumps({"base_url": gts.base_url, "tokens": tokens, "account_ids": ids}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    rng = random.Random(1)
    while line := await reader.readline():
        cmd = json.loads(line)
        out: dict[str, Any] = {}
        if cmd["cmd"] == "requests":
            out = {"count": len(gts.request_log)}
        elif cmd["cmd"] == "streams":
            out = {"open": gts.open_streams()}
        elif cmd["cmd"] == "newest":
            out = {"id": gts.state.notifications[-1].id if gts.state.notifications else "0"}
        elif cmd["cmd"] == "burst":
            users, rate, count = cmd["users"], cmd["rate"], cmd["count"]
            created: dict[str, float] = {}
            start = time.monotonic()
            for k in range(count):
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                user = f"u{rng.choice(users)}"
                kind = cmd.get("type") or rng.choice(["mention", "favourite", "follow", "reblog"])
                n = gts.notify(user, kind, f"fan{rng.randrange(50)}", status_text=f"benchmark {k}")
                created[n["id"]] = time.time()
            out = {"created": created}
        elif cmd["cmd"] == "quit":
            print("{}", flush=True)
            break
        print(json.dumps(out), flush=True)
    await gts.stop()


class FakeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        result: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        return result


# --- the Matrix side -----------------------------------------------------------------------------------


@dataclass
class HomeserverLimit:
    """A token bucket like Synapse's (rate/s, burst) for the recording Matrix fake's `pace`: sends wait it
    out one at a time, in order, like the adapter's sender, and `rate_limited` says when they do."""

    matrix: RecordingMatrix
    rate: float
    burst: int = 10
    _tokens: float = 10.0
    _last: float = field(default_factory=time.monotonic)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    break
                self.matrix.rate_limited = True
                await asyncio.sleep((1 - self._tokens) / self.rate)
            self.matrix.rate_limited = False


def rate_limited_matrix(rate: float, burst: int) -> RecordingMatrix:
    matrix = RecordingMatrix()
    matrix.pace = HomeserverLimit(matrix, rate, burst, _tokens=float(burst))
    return matrix


# --- the bot side --------------------------------------------------------------------------------------


async def setup_db(path: Path, keyring: KeyRing, info: dict[str, Any], users: range, cursor: str) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    sessions = session_factory(engine)
    instance = parse_instance(info["base_url"], allow_http=True).key
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.add(instance=instance, scopes="read", client_id="bench", client_secret="x")
        for i in users:
            account = await repos.accounts.upsert(
                matrix_user_id=f"@u{i}:bench",
                instance=instance,
                app_id=app.id,
                fediverse_account_id=info["account_ids"][i],
                acct=f"u{i}@bench",
                token=info["tokens"][i],
                scopes="read",
            )
            await repos.accounts.set_cursor(account.id, cursor)
            await repos.dm_rooms.set(f"@u{i}:bench", f"!room{i}:bench")
    return engine, sessions


async def wait_for(predicate: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def start_fake(accounts: int) -> tuple[FakeProcess, dict[str, Any]]:
    """The fake GoToSocial in a child process, with `accounts` users and a token each."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.relay",
        "--serve-fake",
        "--accounts",
        str(accounts),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    assert proc.stdout is not None
    info: dict[str, Any] = json.loads(await proc.stdout.readline())
    return FakeProcess(proc), info


async def bench(args: argparse.Namespace) -> None:
    fake, info = await start_fake(args.accounts)
    proc = fake.proc
    settings = FediverseConfig(allow_http=True, allow_private_addresses=True, request_timeout=30.0)
    keyring = KeyRing.generate()
    tmp = tempfile.TemporaryDirectory()
    n = args.accounts
    try:
        async with build_http_client(settings) as http:
            client = FediverseClient.from_settings(http, settings)
            connector = build_stream_connector(settings)

            def manager(sessions: Any, sender: Any) -> RelayManager:
                return RelayManager(
                    sessions=sessions,
                    keyring=keyring,
                    client=client,
                    connector=connector,
                    sender=sender,
                    relay_config=RelayConfig(),
                    allow_http=True,
                    command_prefix="!gts",
                    notify_user=_no_notify,
                    tuning=RelayTuning(),
                    rng=random.Random(3),
                )

            # -- phase 1: N streaming accounts, idle, then R notifications/s
            engine, sessions = await setup_db(Path(tmp.name) / "a.sqlite3", keyring, info, range(n), "0")
            sender = RecordingMatrix()
            relay = manager(sessions, sender)
            t0 = time.monotonic()
            await relay.start()
            ok = await wait_for(lambda: _true(relay.live_streams == n), 300)
            print(f"accounts: {n}; all streams open: {ok} after {time.monotonic() - t0:.1f} s")
            before = (await fake.call(cmd="requests"))["count"]
            await asyncio.sleep(args.idle)
            idle = (await fake.call(cmd="requests"))["count"] - before
            per_hour = idle / n * 3600 / args.idle
            print(
                f"idle: {idle} instance requests in {args.idle:.0f} s → {per_hour:.2f} requests/account/hour"
            )

            count = int(args.rate * args.seconds)
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            created = (await fake.call(cmd="burst", users=list(range(n)), rate=args.rate, count=count))[
                "created"
            ]
            await asyncio.sleep(0.5)
            delivered = await wait_for(lambda: _true(relay.queued_notifications == 0), 120)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            latencies = []
            grouped = 0
            for sent in sender.events:
                at, txn = sent.at, sent.txn_id or ""
                nid = txn.rsplit(".", 1)[-1] if not txn.startswith("gts.g.") else None
                if nid in created:
                    latencies.append(at - created[nid])
                else:
                    grouped += 1
            print(
                f"load: {count} notifications at {args.rate:g}/s; all delivered: {delivered}; "
                f"{len(sender.events)} messages ({grouped} grouped)"
            )
            print(
                f"latency created→send: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
                f"(n={len(latencies)})"
            )
            print(f"CPU: {cpu:.2f} s for {count} → {cpu / count * 1000:.2f} CPU s per 1,000 notifications")
            await relay.stop()
            await engine.dispose()

            # -- phase 2: a homeserver rate limit (0.2/s, burst 10): messages per notification
            if args.rl_notifications > 0:
                k = min(args.rl_accounts, n)
                newest = (await fake.call(cmd="newest"))["id"]
                engine, sessions = await setup_db(
                    Path(tmp.name) / "b.sqlite3", keyring, info, range(k), newest
                )
                limited = rate_limited_matrix(rate=0.2, burst=10)
                relay = manager(sessions, limited)
                await relay.start()
                await wait_for(lambda: _true(relay.live_streams == k), 60)
                rl_count = args.rl_notifications
                await fake.call(cmd="burst", users=list(range(k)), rate=args.rl_rate, count=rl_count)
                await asyncio.sleep(0.5)
                done = await wait_for(lambda: _true(relay.queued_notifications == 0), 600)
                print(
                    f"rate-limited homeserver (0.2/s, burst 10): {rl_count} notifications for {k} users at "
                    f"{args.rl_rate:g}/s → {len(limited.events)} messages = "
                    f"{len(limited.events) / rl_count:.2f} messages per notification (all delivered: {done})"
                )
                await relay.stop()
                await engine.dispose()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the bot process: {rss_mb:.0f} MB")
    finally:
        await fake.call(cmd="quit")
        await proc.wait()
        tmp.cleanup()


async def _no_notify(user: str, plain: str, html: str) -> None:
    return None


async def _true(value: bool) -> bool:
    return value


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--synapse",
        action="store_true",
        help="deliver to a throwaway real Synapse, not the recording sender (benchmarks/relay_synapse.py)",
    )
    p.add_argument("--accounts", type=int, help="default 1000 (--synapse: 20)")
    p.add_argument("--rate", type=float, help="notifications per second; default 50 (--synapse: 5)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load phase")
    p.add_argument("--idle", type=float, help="length of the idle phase, seconds; default 30 (--synapse: 10)")
    p.add_argument("--rl-accounts", type=int, default=5)
    p.add_argument("--rl-notifications", type=int, default=100, help="0 skips the rate-limited phase")
    p.add_argument("--rl-rate", type=float, default=10.0)
    p.add_argument(
        "--max-pending-bytes",
        type=int,
        default=RelayTuning().max_pending_bytes,
        help="--synapse: bytes of notifications queued per user (RelayTuning.max_pending_bytes)",
    )
    p.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    defaults = (20, 5.0, 10.0) if args.synapse else (1000, 50.0, 30.0)
    for name, default in zip(("accounts", "rate", "idle"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.serve_fake:
        asyncio.run(serve_fake(args.accounts))
    elif args.synapse:
        from benchmarks.relay_synapse import bench_synapse

        asyncio.run(bench_synapse(args))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
