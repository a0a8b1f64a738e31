"""Relay benchmark against a real Synapse (`python -m benchmarks.relay --synapse`; prints figures).

A throwaway Synapse (tests/e2e/synapse.py: SQLite, loopback) is started in a temporary directory with a
bot account whose message rate limit is lifted (as the README tells operators to do) and N users. Each user
creates a plain, unencrypted DM room with the bot (is_direct, trusted_private_chat) and the bot joins it
through the real adapter; E2EE is deliberately left out. Accounts and DM rooms are seeded straight into the
bot's SQLite database. The bot side is the real RelayManager sending through the real MatrixAdapter (its
sync loop running, with a handler that ignores events), so every message goes over HTTP to Synapse.

Latency is end to end, from the notification's creation (wall clock in the fake GoToSocial process) to:
- the moment the event arrives in the user's own `/sync` long-poll (each user syncs as a client would);
- the event's `origin_server_ts`, read back by each user from `/messages` after the run;
- the moment the adapter's send returned (Synapse has persisted the event).
Each event is matched to the notifications it carries (`OutgoingNotice.covers`), so a folded message counts
for every notification in it. Synapse, the fake and the bot share one 2-core machine, so Synapse's CPU
competes with the bot's; CPU is reported for all three processes.

Then Synapse's default message limit (`rc_message`: 0.2/s, burst 10) is switched back on for the bot and
one user gets two bursts, each starting from a drained bucket: (a) 30 mentions, one a second; (b) 100
mixed notifications, ten a second. Each prints the measured p50/p90/max (created → in the user's /sync)
next to the bound the limit itself sets (`benchmarks.limit_bound`: the best any sender folding everything
waiting into each allowed message could do, computed from the same creation times), and the message count.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import resource
import secrets
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from benchmarks.limit_bound import folding_bound
from benchmarks.relay import FakeProcess, percentile, start_fake, wait_for
from benchmarks.synapse_side import MatrixUser, WatcherProcess, cpu_seconds, make_users, visible_events
from bot.config import FediverseConfig, RelayConfig
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import build_http_client
from bot.fediverse.instance import parse_instance
from bot.fediverse.streaming import build_stream_connector
from bot.matrix.adapter import MatrixAdapter
from bot.matrix.session import Credentials
from bot.matrix.types import BotEvent, EventId, OutgoingNotice, UserId
from bot.relay.manager import RelayManager
from bot.relay.tuning import RelayTuning
from bot.store.db import create_engine, session_factory
from bot.store.keyring import KeyRing
from bot.store.migrate import upgrade
from bot.store.repositories import Repositories
from bot.store.session_store import DatabaseSessionStore
from tests.e2e.synapse import Synapse, SynapseProcess

DEFAULT_RATE, DEFAULT_BURST = 0.2, 10  # Synapse's rc_message defaults


@dataclass(frozen=True)
class SentMessage:
    returned_at: float  # wall clock: the adapter's send returned (Synapse persisted the event)
    covers: tuple[str, ...]  # the notification ids it carries
    event_id: str
    size: int  # plain + HTML bytes


@dataclass
class RecordingAdapter:
    """Passes relay sends to the real adapter and records each message for matching later."""

    adapter: MatrixAdapter
    sends: list[SentMessage] = field(default_factory=list)

    @property
    def rate_limited(self) -> bool:
        return self.adapter.rate_limited

    async def send_relay(
        self, key: str, compose: Callable[[], Awaitable[OutgoingNotice | None]]
    ) -> EventId | None:
        composed: list[OutgoingNotice] = []

        async def recorded() -> OutgoingNotice | None:
            notice = await compose()
            composed[:] = [] if notice is None else [notice]
            return notice

        event_id = await self.adapter.send_relay(key, recorded)
        if event_id is not None:
            n = composed[0]
            size = len(n.body.encode()) + len(n.html.encode())
            self.sends.append(SentMessage(time.time(), n.covers, event_id, size))
        return event_id


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --- the bot's database -----------------------------------------------------------------------------------


async def open_db(path: Path) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    return engine, session_factory(engine)


async def seed_db(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    info: dict[str, Any],
    users: list[MatrixUser],
) -> None:
    """Fediverse account i connected for Matrix user i, DM room recorded, cursor at the start."""
    instance = parse_instance(info["base_url"], allow_http=True).key
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.add(instance=instance, scopes="read", client_id="bench", client_secret="x")
        for i, user in enumerate(users):
            account = await repos.accounts.upsert(
                matrix_user_id=user.user_id,
                instance=instance,
                app_id=app.id,
                fediverse_account_id=info["account_ids"][i],
                acct=f"u{i}@bench",
                token=info["tokens"][i],
                scopes="read",
            )
            await repos.accounts.set_cursor(account.id, "0")
            await repos.dm_rooms.set(user.user_id, user.room_id)


# --- the run ------------------------------------------------------------------------------------------


async def _ignore(event: BotEvent) -> None:
    return None


async def _no_notify(user: str, plain: str, html: str) -> None:
    return None


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.0f} ms"


async def drained(relay: RelayManager, adapter: MatrixAdapter, limit: float) -> bool:
    async def check() -> bool:
        return relay.queued_notifications == 0 and adapter.queued_sends == 0

    await asyncio.sleep(0.5)
    return await wait_for(check, limit)


async def bench_synapse(args: argparse.Namespace) -> None:
    # 429s are counted and reported; the adapter's per-retry warning would only clutter the figures.
    logging.getLogger("bot.matrix.sender").setLevel(logging.ERROR)
    n = args.accounts
    fake, info = await start_fake(n)
    tmp = tempfile.TemporaryDirectory()
    workdir = Path(tmp.name)
    (workdir / "synapse").mkdir()
    server = SynapseProcess(workdir / "synapse")
    try:
        synapse = await asyncio.to_thread(server.start)
        assert server.proc is not None
        print(f"Synapse (SQLite, same 2-core machine) ready in {server.startup_seconds:.1f} s")
        await run(args, fake, info, synapse, server.proc.pid, workdir)
    finally:
        await asyncio.to_thread(server.stop)
        await fake.call(cmd="quit")
        await fake.proc.wait()
        tmp.cleanup()


async def run(
    args: argparse.Namespace,
    fake: FakeProcess,
    info: dict[str, Any],
    synapse: Synapse,
    synapse_pid: int,
    workdir: Path,
) -> None:
    n = args.accounts
    keyring = KeyRing.generate()
    password = secrets.token_hex(12)
    bot_user = await synapse.create_account("gtsbot", password)
    await synapse.override_ratelimit(bot_user, 0, 0)
    t0 = time.monotonic()
    engine, sessions = await open_db(workdir / "bot.sqlite3")
    adapter = MatrixAdapter(
        Credentials(
            homeserver=synapse.base_url,
            user_id=UserId(bot_user),
            store_dir=workdir / "nio-store",
            pickle_key=keyring.e2ee_store_key(),
            password=password,
        ),
        DatabaseSessionStore(sessions, keyring),
        encrypt_new_dms=False,
    )
    await adapter.start()
    users = await make_users(synapse, adapter, n)
    await seed_db(sessions, keyring, info, users)
    print(
        f"{n} users, each with an unencrypted DM room with the bot: set up in {time.monotonic() - t0:.1f} s"
    )
    sync = asyncio.create_task(adapter.run(_ignore), name="matrix-sync")
    sender = RecordingAdapter(adapter)
    settings = FediverseConfig(allow_http=True, allow_private_addresses=True, request_timeout=30.0)
    try:
        async with build_http_client(settings) as http:
            relay = RelayManager(
                sessions=sessions,
                keyring=keyring,
                client=FediverseClient.from_settings(http, settings),
                connector=build_stream_connector(settings),
                sender=sender,
                relay_config=RelayConfig(),
                allow_http=True,
                command_prefix="!gts",
                notify_user=_no_notify,
                tuning=RelayTuning(max_pending_bytes=args.max_pending_bytes),
                rng=random.Random(3),
            )
            t0 = time.monotonic()
            await relay.start()
            ok = await wait_for(lambda: _is(relay.live_streams == n), 120)
            print(f"accounts: {n}; all streams open: {ok} after {time.monotonic() - t0:.1f} s")
            before, cpu0 = (await fake.call(cmd="requests"))["count"], own_cpu()
            await asyncio.sleep(args.idle)
            idle = (await fake.call(cmd="requests"))["count"] - before
            print(
                f"idle: {idle} instance requests in {args.idle:.0f} s → "
                f"{idle / n * 3600 / args.idle:.2f} requests/account/hour; "
                f"bot CPU {own_cpu() - cpu0:.2f} s"
            )
            await load_phase(args, fake, relay, adapter, sender, synapse, synapse_pid, users)
            if args.rl_notifications > 0:
                print(f"queue bound per user (max_pending_bytes): {args.max_pending_bytes} bytes")
                await limited_phase(fake, relay, adapter, sender, synapse, users[0])
            await relay.stop()
    finally:
        await adapter.stop()
        sync.cancel()
        await asyncio.gather(sync, return_exceptions=True)
        await engine.dispose()
    print(f"peak RSS of the bot process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


async def load_phase(
    args: argparse.Namespace,
    fake: FakeProcess,
    relay: RelayManager,
    adapter: MatrixAdapter,
    sender: RecordingAdapter,
    synapse: Synapse,
    synapse_pid: int,
    users: list[MatrixUser],
) -> None:
    count = int(args.rate * args.seconds)
    watchers = await WatcherProcess.start(synapse.base_url, users, str(adapter.user_id))
    pids = (synapse_pid, fake.proc.pid, watchers.proc.pid)
    cpu0, others0 = own_cpu(), [cpu_seconds(pid) for pid in pids]
    started = time.monotonic()
    created: dict[str, float] = (
        await fake.call(cmd="burst", users=list(range(len(users))), rate=args.rate, count=count)
    )["created"]
    delivered = await drained(relay, adapter, 120)
    cpu, (syn, fake_cpu, clients) = (
        own_cpu() - cpu0,
        [cpu_seconds(p) - c for p, c in zip(pids, others0, strict=True)],
    )
    elapsed = time.monotonic() - started
    await asyncio.sleep(2.0)  # the users' long-polls return within milliseconds of a send
    synced_at, failed_watchers = await watchers.stop()
    seen: dict[str, int] = {}
    for user in users:
        seen.update(await visible_events(synapse, user, str(adapter.user_id)))
    synced: list[float] = []
    stamped: list[float] = []
    to_send: list[float] = []
    grouped = sum(1 for sent in sender.sends if len(sent.covers) > 1)
    missing = sum(1 for sent in sender.sends if sent.event_id not in seen)
    for sent in sender.sends:
        for nid in sent.covers:
            if nid not in created:
                continue
            to_send.append(sent.returned_at - created[nid])
            if sent.event_id in seen:
                stamped.append(seen[sent.event_id] / 1000 - created[nid])
            if sent.event_id in synced_at:
                synced.append(synced_at[sent.event_id] - created[nid])
    messages = len(sender.sends)
    print(
        f"load: {count} notifications at {args.rate:g}/s for {len(users)} users; all delivered: {delivered}; "
        f"{messages} messages ({grouped} grouped) = {messages / count:.2f} messages per notification; "
        f"{len(seen)} bot events visible to the users ({missing} sent but not visible); "
        f"429s: {adapter.rate_limit_hits}"
    )
    for label, values in (
        ("created→in the user's /sync (each user long-polls as a client does)", synced),
        ("created→origin_server_ts (Synapse's stamp, read back from /messages)", stamped),
        ("created→the adapter's send returned (event persisted)", to_send),
    ):
        print(
            f"latency {label}: p50 {ms(values, 0.5)}, p99 {ms(values, 0.99)}, max {ms(values, 1.0)} "
            f"(n={len(values)})"
        )
    if failed_watchers or len(synced_at) < messages:
        print(f"  ({messages - len(synced_at)} events not seen by /sync; {failed_watchers} watchers failed)")
    print(
        f"CPU over the {elapsed:.0f} s load phase (idle costs included): bot {cpu:.2f} s, "
        f"Synapse {syn:.2f} s, "
        f"users' /sync clients {clients:.2f} s, fake GoToSocial {fake_cpu:.2f} s (2 cores shared by all); "
        f"bot {cpu / count * 1000:.2f} CPU s per 1,000 notifications"
    )


BURSTS = (
    ("(a) 30 mentions at 1/s", "mention", 30, 1.0),
    ("(b) 100 mixed notifications at 10/s", None, 100, 10.0),
)


async def limited_phase(
    fake: FakeProcess,
    relay: RelayManager,
    adapter: MatrixAdapter,
    sender: RecordingAdapter,
    synapse: Synapse,
    user: MatrixUser,
) -> None:
    """Synapse's default rc_message (0.2/s, burst 10) back on for the bot; one user, two bursts.

    Each burst starts from a drained bucket: before it the bot sends nothing for burst/rate = 50 s.
    """
    quoted = urllib.parse.quote(str(adapter.user_id))
    await synapse.admin_request("DELETE", f"/_synapse/admin/v1/users/{quoted}/override_ratelimit")
    print(
        f"Synapse's default message limit for the bot ({DEFAULT_RATE:g}/s, burst {DEFAULT_BURST}), one user:"
    )
    watchers = await WatcherProcess.start(synapse.base_url, [user], str(adapter.user_id))
    results: list[tuple[str, dict[str, float], list[SentMessage], int]] = []
    try:
        for label, kind, count, rate in BURSTS:
            await asyncio.sleep(DEFAULT_BURST / DEFAULT_RATE)  # the bucket drains
            sent0, hits0 = len(sender.sends), adapter.rate_limit_hits
            created: dict[str, float] = (
                await fake.call(cmd="burst", users=[0], rate=rate, count=count, type=kind)
            )["created"]
            await drained(relay, adapter, 300)
            results.append((label, created, sender.sends[sent0:], adapter.rate_limit_hits - hits0))
        await asyncio.sleep(2.0)  # the user's long-poll returns within milliseconds of a send
    finally:
        synced_at, failed = await watchers.stop()
    for label, created, sends, hits in results:
        report_burst(label, created, sends, synced_at, hits)
    if failed:
        print(f"  (the user's /sync watcher failed: {failed})")


def report_burst(
    label: str, created: dict[str, float], sends: list[SentMessage], synced_at: dict[str, float], hits: int
) -> None:
    t0 = min(created.values())
    bound = folding_bound(sorted(t - t0 for t in created.values()), rate=DEFAULT_RATE, burst=DEFAULT_BURST)
    synced = [synced_at[s.event_id] - created[n] for s in sends if s.event_id in synced_at for n in s.covers]
    returned = [s.returned_at - created[n] for s in sends for n in s.covers]
    carried = sorted(n for s in sends for n in s.covers)
    lost, doubled = len(set(created) - set(carried)), len(carried) - len(set(carried))

    def figures(values: list[float]) -> str:
        return f"p50 {ms(values, 0.5)}, p90 {ms(values, 0.9)}, max {ms(values, 1.0)}"

    # What the bound leaves out: the way from the fake through the bot and Synapse to the user's /sync,
    # seen on the notifications the bound sends at once (each went in the burst, waiting for no limiter).
    order = sorted(created, key=created.__getitem__)
    at_once = {nid for nid, wait in zip(order, bound.latencies, strict=True) if wait == 0}
    transit = [
        synced_at[s.event_id] - created[n]
        for s in sends
        if s.event_id in synced_at
        for n in s.covers
        if n in at_once
    ]
    b90, m90 = percentile(list(bound.latencies), 0.9), percentile(synced, 0.9)
    print(
        f"{label}: {len(sends)} messages (the bound: {bound.messages}); 429s answered: {hits}; "
        f"largest message {max((s.size for s in sends), default=0)} bytes; lost {lost}, doubled {doubled}"
    )
    print(f"  bound set by the limit (best folding sender): {figures(list(bound.latencies))}")
    print(f"  created→in the user's /sync:                  {figures(synced)} (n={len(synced)})")
    print(f"  created→the adapter's send returned:          {figures(returned)}")
    timeline = " ".join(f"{s.returned_at - t0:.1f}({len(s.covers)})" for s in sends)
    print(f"  messages (s after the first notification, how many it carries): {timeline}")
    print(f"  the bound's sends: {' '.join(f'{t:.1f}' for t in bound.sends)}")
    print(f"  transit alone (those the bound sends at once): {figures(transit)} (n={len(transit)})")
    print(f"  p90 / bound p90: {m90 / b90:.3f} (+{(m90 - b90) * 1000:.0f} ms)" if b90 > 0 else "")


async def _is(value: bool) -> bool:
    return value
