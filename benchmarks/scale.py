"""Scale benchmark: 10,000 accounts over 100 instances in one bot process (prints figures; not a test).

    .venv/bin/python -m benchmarks.scale [--accounts 10000] [--instances 100] [--rate 50] [--seconds 20]
    .venv/bin/python -m benchmarks.scale --accounts 1000 --instances 10 --window 60   # a quick check

Each instance is its own fake GoToSocial on loopback with GoToSocial's per-IP budget (300 requests per
fixed 5-minute window by default, `--budget`/`--window`); the fakes run in `--fake-processes` child
processes (JSON lines over stdin/stdout), so the bot's CPU and memory are measured alone. The bot side is
the real RelayManager with a real SQLite database, a recording Matrix sender, and one PacerRegistry per
bot process shared by the REST client and the stream connector, as `bot/app.py` builds them.

Phases and figures:

- start: every account has a cursor (as after a first run), the relay starts; time until every stream is
  open; per instance the requests it got (catch-up pages, handshakes, the rest) and the 429s it sent;
- load (on the restarted relay): `--rate` notifications a second for `--seconds` over random accounts;
  latency created (wall clock in the fake) → `send_notice` (wall clock here) p50/p99 for notifications
  sent on their own;
  CPU seconds per 1,000 notifications (this process, resource.getrusage);
- restart: right after the start, the relay stops and a new one starts over the same database, with new
  pacers and a new stream connector (a new process knows nothing of the budgets spent); the same
  start-up figures, and what was left of each instance's window when it began (the worst case: most of
  the budget is spent);
- peak RSS of the bot process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import FediverseConfig, RelayConfig
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import build_http_client
from bot.fediverse.instance import parse_instance
from bot.fediverse.ratelimit import PacerRegistry
from bot.fediverse.streaming import build_stream_connector
from bot.relay.heap import freeze_long_lived
from bot.relay.manager import RelayManager
from bot.relay.tuning import RelayTuning
from bot.store.db import create_engine, session_factory
from bot.store.keyring import KeyRing
from bot.store.migrate import upgrade
from bot.store.repositories import Repositories
from tests.fakes.matrix import RecordingMatrix

# --- the fake instances, in child processes ------------------------------------------------------------


async def serve_fakes(instances: int, users: int, budget: int, window: float) -> None:
    from tests.fakes.gotosocial import FakeGoToSocial

    fakes = []
    out = []
    for _ in range(instances):
        gts = FakeGoToSocial(rate_limit=budget, rate_window=window, ping_interval=30.0)
        await gts.start()
        tokens, ids = [], []
        for i in range(users):
            gts.add_user(f"u{i}")
            tokens.append(gts.issue_token(f"u{i}"))
            ids.append(gts.user(f"u{i}").account_id)
        fakes.append(gts)
        out.append({"base_url": gts.base_url, "tokens": tokens, "account_ids": ids})
    print(json.dumps(out), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    rng = random.Random(len(fakes))
    while line := await reader.readline():
        cmd = json.loads(line)
        reply: Any = {}
        if cmd["cmd"] == "stats":
            reply = [
                {
                    "requests": Counter(path for _, path in gts.request_log),
                    "rate_limited": gts.rate_limited_responses,
                    "open": gts.open_streams(),
                    "budget_left": _budget_left(gts, budget),
                }
                for gts in fakes
            ]
        elif cmd["cmd"] == "burst":
            reply = {"created": await _burst(fakes, users, cmd["rate"], cmd["count"], rng)}
        elif cmd["cmd"] == "quit":
            print("{}", flush=True)
            break
        print(json.dumps(reply), flush=True)
    for gts in fakes:
        await gts.stop()


def _budget_left(gts: Any, budget: int) -> int:
    """What is left of the loopback client's current window (the whole budget when none is running)."""
    entry = gts.state.rate_buckets.get(("client", "127.0.0.1"))
    if entry is None or gts.state.rate_clock() >= entry[0]:
        return budget
    return max(0, budget - int(entry[1]))


async def _burst(
    fakes: list[Any], users: int, rate: float, count: int, rng: random.Random
) -> dict[str, float]:
    created: dict[str, float] = {}
    start = time.monotonic()
    for k in range(count):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        gts = rng.choice(fakes)
        kind = rng.choice(["mention", "favourite", "follow", "reblog"])
        n = gts.notify(f"u{rng.randrange(users)}", kind, f"fan{rng.randrange(50)}", status_text=f"load {k}")
        created[n["id"]] = time.time()
    return created


class FakeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return json.loads(await self.proc.stdout.readline())


async def start_fakes(args: argparse.Namespace) -> tuple[list[FakeProcess], list[dict[str, Any]]]:
    per_process = [args.instances // args.fake_processes] * args.fake_processes
    for i in range(args.instances % args.fake_processes):
        per_process[i] += 1
    users = args.accounts // args.instances

    async def one(count: int) -> tuple[FakeProcess, list[dict[str, Any]]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.scale", "--serve-fakes",
            "--instances", str(count), "--accounts", str(count * users),
            "--budget", str(args.budget), "--window", str(args.window),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
        )  # fmt: skip
        assert proc.stdout is not None
        return FakeProcess(proc), json.loads(await proc.stdout.readline())

    started = await asyncio.gather(*(one(n) for n in per_process if n > 0))
    return [p for p, _ in started], [info for _, infos in started for info in infos]


# --- the bot side --------------------------------------------------------------------------------------


async def setup_db(path: Path, keyring: KeyRing, instances: list[dict[str, Any]]) -> Any:
    """Every account connected, each for its own Matrix user with a DM room, cursor at "0"."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    sessions = session_factory(engine)
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        for i, info in enumerate(instances):
            instance = parse_instance(info["base_url"], allow_http=True).key
            app = await repos.apps.add(instance=instance, scopes="read", client_id=f"c{i}", client_secret="x")
            for j, token in enumerate(info["tokens"]):
                user = f"@i{i}u{j}:bench"
                account = await repos.accounts.upsert(
                    matrix_user_id=user,
                    instance=instance,
                    app_id=app.id,
                    fediverse_account_id=info["account_ids"][j],
                    acct=f"u{j}@i{i}",
                    token=token,
                    scopes="read",
                )
                await repos.accounts.set_cursor(account.id, "0")
                await repos.dm_rooms.set(user, f"!room-i{i}u{j}:bench")
    return engine, sessions


@dataclass
class Startup:
    seconds: float
    all_open: bool
    requests: list[Counter[str]]  # per instance, by path, during this start
    rate_limited: int


async def stats(fakes: list[FakeProcess]) -> list[dict[str, Any]]:
    return [entry for fake in fakes for entry in await fake.call(cmd="stats")]


async def wait_for(predicate: Callable[[], Awaitable[bool]], limit: float, every: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(every)
    return False


async def measure_start(relay: RelayManager, fakes: list[FakeProcess], n: int, limit: float) -> Startup:
    """Time until every stream is open; requests counted until the instances hear nothing new for 3 s
    (the last catch-ups run after their stream opened)."""
    before = await stats(fakes)
    t0 = time.monotonic()
    await relay.start()

    async def all_open() -> bool:
        return relay.live_streams == n

    await wait_for(all_open, limit, 0.2)
    seconds = time.monotonic() - t0
    last: list[int] = []

    async def quiet() -> bool:
        totals = [sum(entry["requests"].values()) for entry in await stats(fakes)]
        settled = totals == last
        last[:] = totals
        return settled

    await wait_for(quiet, limit, 3.0)
    after = await stats(fakes)
    requests = [Counter(a["requests"]) - Counter(b["requests"]) for a, b in zip(after, before, strict=True)]
    limited = sum(a["rate_limited"] - b["rate_limited"] for a, b in zip(after, before, strict=True))
    return Startup(seconds, relay.live_streams == n, requests, limited)


def report_start(name: str, start: Startup, n: int, budget: int, window: float) -> None:
    total = [sum(c.values()) for c in start.requests]
    catch_up = [c["/api/v1/notifications"] for c in start.requests]
    handshakes = [c["/api/v1/streaming"] for c in start.requests]
    print(
        f"{name}: all {n} streams open: {start.all_open} after {start.seconds:.1f} s; "
        f"429s sent by the instances: {start.rate_limited}"
    )
    print(
        f"  per instance (budget {budget} per {window:g} s): requests mean {statistics.mean(total):.1f} "
        f"max {max(total)}; catch-up pages mean {statistics.mean(catch_up):.1f} max {max(catch_up)}; "
        f"handshakes mean {statistics.mean(handshakes):.1f} max {max(handshakes)}"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


pauses: list[float] = []


def _watch_gc() -> None:
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


async def bench(args: argparse.Namespace) -> None:
    _watch_gc()
    fakes, instances = await start_fakes(args)
    n = sum(len(info["tokens"]) for info in instances)
    settings = FediverseConfig(allow_http=True, allow_private_addresses=True, request_timeout=30.0)
    keyring = KeyRing.generate()
    tmp = tempfile.TemporaryDirectory()
    try:
        t_setup = time.monotonic()
        engine, sessions = await setup_db(Path(tmp.name) / "scale.sqlite3", keyring, instances)
        took = time.monotonic() - t_setup
        print(f"{n} accounts on {len(instances)} instances; database written in {took:.0f} s")
        async with build_http_client(settings) as http:
            sender = RecordingMatrix()

            def freeze() -> None:
                t = time.monotonic()
                freeze_long_lived()
                print(
                    f"  heap settled (gc.freeze) in {time.monotonic() - t:.1f} s; "
                    f"{gc.get_freeze_count()} objects frozen"
                )

            def process() -> RelayManager:
                """What one bot process builds: its own pacers, shared by REST and stream handshakes."""
                pacers = PacerRegistry()
                return RelayManager(
                    sessions=sessions,
                    keyring=keyring,
                    client=FediverseClient.from_settings(http, settings, pacers=pacers),
                    connector=build_stream_connector(settings, pacers=pacers),
                    sender=sender,
                    relay_config=RelayConfig(),
                    allow_http=True,
                    command_prefix="!gts",
                    notify_user=_no_notify,
                    tuning=RelayTuning(),
                    rng=random.Random(3),
                    on_streams_open=freeze if args.freeze else None,
                )

            relay = process()
            start = await measure_start(relay, fakes, n, args.start_limit)
            report_start("start", start, n, args.budget, args.window)

            t_stop = time.monotonic()
            await relay.stop()
            print(f"stop: {time.monotonic() - t_stop:.1f} s")
            left = [entry["budget_left"] for entry in await stats(fakes)]
            relay = process()
            restart = await measure_start(relay, fakes, n, args.start_limit)
            report_start("restart (a new process at once)", restart, n, args.budget, args.window)
            print(
                f"  budget left in the window when it began: min {min(left)}, "
                f"mean {statistics.mean(left):.0f}"
            )

            count = int(args.rate * args.seconds)
            pauses.clear()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            per_fake = [count // len(fakes) + (1 if i < count % len(fakes) else 0) for i in range(len(fakes))]
            replies = await asyncio.gather(
                *(
                    fake.call(cmd="burst", rate=args.rate * share / count, count=share)
                    for fake, share in zip(fakes, per_fake, strict=True)
                )
            )
            created = {nid: at for reply in replies for nid, at in reply["created"].items()}
            await asyncio.sleep(0.5)  # the last frames are on their way; then wait for the queues to empty

            async def drained() -> bool:
                return relay.queued_notifications == 0

            await wait_for(drained, 120, 1.0)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            latencies = []
            for sent in sender.events:
                nid = (sent.txn_id or "").rsplit(".", 1)[-1]
                if nid in created:
                    latencies.append(sent.at - created[nid])
            print(
                f"load: {count} notifications at {args.rate:g}/s over {n} accounts; all delivered: "
                f"{relay.queued_notifications == 0}; {len(sender.events)} messages "
                f"({len(sender.events) - len(latencies)} grouped)"
            )
            print(
                f"  latency created→send: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
                f"max {max(latencies, default=0) * 1000:.0f} ms (n={len(latencies)})"
            )
            print(f"  CPU: {cpu:.2f} s → {cpu / max(count, 1) * 1000:.2f} CPU s per 1,000 notifications")
            print(
                f"  garbage collector during the load: {len(pauses)} collections, "
                f"{sum(pauses):.2f} s in all, "
                f"longest {max(pauses, default=0) * 1000:.0f} ms"
            )
            await relay.stop()
        await engine.dispose()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the bot process: {rss:.0f} MB")
    finally:
        for fake in fakes:
            await fake.call(cmd="quit")
            await fake.proc.wait()
        tmp.cleanup()


async def _no_notify(user: str, plain: str, html: str) -> None:
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--rate", type=float, default=50.0, help="notifications per second in the load phase")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load phase")
    p.add_argument(
        "--budget", type=int, default=300, help="requests per window per instance (GoToSocial: 300)"
    )
    p.add_argument("--window", type=float, default=300.0, help="rate-limit window, seconds (GoToSocial: 300)")
    p.add_argument("--fake-processes", type=int, default=2, help="child processes serving the instances")
    p.add_argument("--start-limit", type=float, default=900.0, help="give up waiting for streams after this")
    p.add_argument(
        "--no-freeze",
        dest="freeze",
        action="store_false",
        help="leave the heap unsettled (as before the fix)",
    )
    p.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_fakes:
        asyncio.run(serve_fakes(args.instances, args.accounts // args.instances, args.budget, args.window))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
