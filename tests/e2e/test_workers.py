"""Issue 13, past one process: 3 relay workers and 1 Matrix process (`python -m bot run --role …`
subprocesses) on the throwaway PostgreSQL and the real Synapse. The workers share six fediverse accounts
through leases; one worker is SIGKILLed while mentions flow. Every mention arrives exactly once, and the
dead worker's accounts are held by the others within 30 s of the kill. (Three instances with two accounts
each: a user's share of one instance's requests allows only a few connects at a time.)"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.e2e.bot_harness import connect_account, new_bot_account, open_dm
from tests.e2e.conftest import MakeHuman
from tests.e2e.reliability_support import (
    BotProcess,
    bot_env,
    exactly_once_problems,
    marker,
    wait_for_markers,
)
from tests.e2e.synapse import Synapse
from tests.fakes.gotosocial import FakeGoToSocial
from tests.pg import PostgresServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PASSWORD = "Long-Strong-Passw0rd!"
INSTANCES = 3
USERS = [f"user{i}" for i in range(2)]  # on each instance
WORKERS = ["relay-1", "relay-2", "relay-3"]
TAKEOVER_BOUND = 30.0  # the promise: a dead worker's accounts move within 30 s
HANG_GUARD = 480.0


@pytest.fixture
async def database(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, str]]:
    """(SQLAlchemy URL, plain DSN) of a fresh database on the throwaway server."""
    name = f"gts_e2e_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url(name), postgres_server.dsn(name)
    admin = await asyncpg.connect(postgres_server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def start(env: dict[str, str], cwd: Path, log_path: Path, *args: str) -> BotProcess:
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, cwd=cwd, env=env, stdout=log, stderr=log
        )
    return BotProcess(proc, log_path, 0)


async def holders(dsn: str) -> dict[int, str]:
    """account id → the worker holding an unexpired lease on it."""
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch(
            "SELECT account_id, holder FROM relay_leases WHERE holder IS NOT NULL AND expires_at > now()"
        )
    finally:
        await db.close()
    return {row["account_id"]: row["holder"] for row in rows}


async def _all_held_by(dsn: str, worker: str, count: int) -> bool:
    held = await holders(dsn)
    return len(held) == count and set(held.values()) == {worker}


async def test_three_workers_share_the_accounts_and_survive_a_sigkill_exactly_once(
    synapse: Synapse,
    make_human: MakeHuman,
    database: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, dsn = database
    bot_user, bot_password = await new_bot_account(synapse)
    env = bot_env(synapse.base_url, bot_user, bot_password, tmp_path / "data")
    env["GTS_BOT_DATABASE__URL"] = url
    alice = await make_human("alice")
    processes: list[BotProcess] = []
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(FakeGoToSocial()) for _ in range(INSTANCES)]
        accounts = [(gts, user) for gts in servers for user in USERS]
        for gts in servers:
            gts.add_user("bob", "bob@example.org", PASSWORD)
            for user in USERS:
                gts.add_user(user, f"{user}@example.org", PASSWORD)
        try:
            async with asyncio.timeout(HANG_GUARD):
                matrix = await start(env, tmp_path, tmp_path / "matrix.log", "run", "--role", "matrix")
                processes.append(matrix)
                await matrix.wait_running()
                room = await open_dm(alice, bot_user)
                for gts, user in accounts:
                    reply, _ = await connect_account(
                        alice, room, bot_user, gts, f"{user}@example.org", PASSWORD
                    )
                    assert f"Connected as @{user}@{gts.host}" in reply

                workers = {}
                for name in WORKERS:
                    worker = await start(
                        env, tmp_path, tmp_path / f"{name}.log", "run", "--role", "relay", "--worker-id", name
                    )
                    processes.append(worker)
                    workers[name] = worker

                async def spread_fairly() -> bool:
                    held = list((await holders(dsn)).values())
                    return len(held) == len(accounts) and all(held.count(n) == 2 for n in WORKERS)

                await wait_until(spread_fairly, interval=0.5, what="two accounts held by each worker")
                await wait_until(
                    lambda: all(gts.open_streams(u) == 1 for gts, u in accounts),
                    what="every account streaming",
                )
                listing = await start(env, tmp_path, tmp_path / "list.log", "accounts", "list")
                assert await listing.proc.wait() == 0
                for name in WORKERS:
                    assert listing.output().count(f"{name} (lease until") == 2, listing.output()

                created: list[str] = []

                def mention(index: int) -> None:
                    text = marker(index)
                    gts, user = accounts[index % len(accounts)]
                    gts.notify(user, "mention", "bob", status_text=f"{text} here")
                    created.append(text)

                async def produce(first: int, count: int) -> None:
                    for index in range(first, first + count):
                        mention(index)
                        await asyncio.sleep(0.1)

                producing = asyncio.create_task(produce(0, 60))
                await wait_until(lambda: len(created) >= 20, what="mentions flowing")
                victim = WORKERS[1]
                lost = sorted(a for a, holder in (await holders(dsn)).items() if holder == victim)
                await workers[victim].kill()

                async def moved() -> bool:
                    now = await holders(dsn)
                    return all(now.get(a) in set(WORKERS) - {victim} for a in lost)

                await wait_until(
                    moved, timeout=TAKEOVER_BOUND, interval=0.5, what=f"{victim}'s accounts taken over"
                )
                await producing
                mention(len(created))  # after all the others: once it is there, nothing is still queued
                reading = await wait_for_markers(alice, room, bot_user, created, timeout=180.0)
                assert exactly_once_problems(reading, created) == []
                held = await holders(dsn)
                assert len(held) == len(accounts)
                assert victim not in held.values()

                # A clean stop (SIGTERM) frees the worker's leases at once; the last worker takes them.
                assert await workers[WORKERS[0]].terminate() == 0
                assert WORKERS[0] not in (await holders(dsn)).values()
                await wait_until(
                    lambda: _all_held_by(dsn, WORKERS[2], len(accounts)), what="the last worker holding all"
                )
        finally:
            for process in processes:
                await process.kill()
