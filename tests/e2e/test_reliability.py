"""Issue 5: every notification arrives exactly once, whatever happens to the bot, the instance or the
homeserver.

- the bot (a real `python -m bot run` subprocess) is SIGKILLed at random moments while mentions flow, and
  restarted: every mention's marker appears exactly once in the DM;
- the instance is down for a while (connections dropped, or a proxy answering 502): relaying resumes and
  nothing created meanwhile is lost;
- the homeserver is stopped and restarted on the same port (or frozen with SIGSTOP): the same.

The kill schedule comes from a seeded random.Random; the seed is printed, and GTS_RELIABILITY_SEED=<seed>
replays it.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.bot_harness import bot_config, connect_account, new_bot_account, next_text, open_dm, run_bot
from tests.e2e.conftest import MakeHuman
from tests.e2e.human import Human
from tests.e2e.reliability_support import (
    BotProcess,
    MentionSource,
    SlowLink,
    bot_env,
    exactly_once_problems,
    wait_for_markers,
)
from tests.e2e.synapse import Synapse, SynapseProcess
from tests.fakes.gotosocial import FakeGoToSocial
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"

KILL_ROUNDS = 5
HANG_GUARD = 480.0  # a hang fails the test with a message and cleans up (before pytest-timeout's 600 s)


@pytest.fixture
async def gts() -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial() as server:
        server.add_user("alice", EMAIL, PASSWORD)
        server.add_user("bob", "bob@example.org", PASSWORD)
        yield server


def _seed() -> int:
    chosen = os.environ.get("GTS_RELIABILITY_SEED")
    seed = int(chosen) if chosen else secrets.randbits(32)
    print(f"\nreliability seed: {seed} (replay with GTS_RELIABILITY_SEED={seed})")
    return seed


def _outbox_rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "gts-bot.sqlite3") as db:
        (count,) = db.execute("SELECT count(*) FROM relay_outbox").fetchone()
    assert isinstance(count, int)
    return count


async def test_sigkill_at_random_moments_relays_every_notification_exactly_once(
    synapse: Synapse, make_human: MakeHuman, gts: FakeGoToSocial, tmp_path: Path
) -> None:
    """Each round: notifications are created while the bot runs; once the bot is sending (through a slow
    link, so a kill can land before a send, during it, or after the homeserver stored the event but before
    the bot learnt so) it is SIGKILLed at a random moment; more notifications are created while it is
    dead; it restarts. The moments are counted in events (sends seen), not in seconds, so a slow machine
    changes only how long the test takes."""
    rng = random.Random(_seed())
    link_rng = random.Random(rng.random())
    link = SlowLink(synapse.base_url, lambda: link_rng.uniform(0.0, 0.3))
    await link.start()
    bot_user, bot_password = await new_bot_account(synapse)
    data_dir = tmp_path / "data"
    env = bot_env(link.base_url, bot_user, bot_password, data_dir)
    log_path = tmp_path / "bot.log"
    alice = await make_human("alice")
    source = MentionSource(gts, "alice", interval=0.25)  # (its pace here: `produce`)

    bot = await BotProcess.start(env, tmp_path, log_path)
    try:
        async with asyncio.timeout(HANG_GUARD):
            await bot.wait_running()
            room = await open_dm(alice, bot_user)
            reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
            assert f"Connected as @alice@{gts.host}" in reply

            for round_no in range(KILL_ROUNDS):
                seen = link.send_requests
                producing = asyncio.create_task(
                    source.produce(rng.randint(3, 8), lambda: rng.uniform(0.0, 0.3)), name="mentions"
                )
                await wait_until(
                    lambda seen=seen: link.send_requests > seen,
                    what=f"round {round_no}: the bot sending again",
                )
                await asyncio.sleep(rng.uniform(0.0, 0.6))  # where in the send (or the next) it dies
                await bot.kill()
                await producing  # what was still to come is created while the bot is dead
                for _ in range(rng.randint(1, 3)):
                    source.notify_one()
                print(
                    f"round {round_no}: killed pid {bot.pid}; {len(source.created)} notifications so far, "
                    f"{link.sends} sends answered"
                )
                bot = await BotProcess.start(env, tmp_path, log_path)
                await bot.wait_running()
            # The last run drains everything. A final marker, created after all the others, arrives after
            # anything still queued (delivery keeps order, outbox rows first), so once it is there a late
            # duplicate cannot come any more.
            await wait_for_markers(alice, room, bot_user, source.created, timeout=120.0)
            source.notify_one()
            expected = list(source.created)
            print(f"{len(expected)} notifications over {KILL_ROUNDS} SIGKILLed runs")
            reading = await wait_for_markers(alice, room, bot_user, expected, timeout=120.0)
            assert await bot.terminate() == 0, bot.tail()
    finally:
        await bot.kill()
        await link.stop()

    problems = exactly_once_problems(reading, expected)
    assert not problems, f"{'; '.join(problems)}\n--- last bot run ---\n{bot.tail(60)}"
    assert link.sends > 0  # the bot's sends really went through the slow link
    assert _outbox_rows(data_dir) == 0  # nothing left waiting to be sent


@pytest.mark.parametrize(
    ("down_status", "seconds"),
    [(None, 4.0), (502, 4.0), (None, 12.0)],
    ids=["connections-dropped", "proxy-502", "long-outage"],
)
async def test_instance_down_for_a_while_loses_nothing(
    synapse: Synapse,
    make_human: MakeHuman,
    gts: FakeGoToSocial,
    tmp_path: Path,
    down_status: int | None,
    seconds: float,
) -> None:
    """Down as a dead server (connections dropped) or behind a proxy answering 502; the long outage sees
    the catch-up retried with a growing backoff until the instance answers again."""
    bot_user, bot_password = await new_bot_account(synapse)
    config = bot_config(synapse, bot_user, bot_password, tmp_path / "data")
    alice = await make_human("alice")
    source = MentionSource(gts, "alice", interval=0.5)
    async with asyncio.timeout(HANG_GUARD), run_bot(config) as running:
        room = await open_dm(alice, bot_user)
        reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
        assert "Connected as" in reply
        first = source.notify_one()
        assert first in await next_text(alice, room, bot_user)
        assert gts.open_streams("alice") == 1  # it was streaming

        gts.faults.down_status = down_status
        gts.faults.down = True
        assert gts.drop_streams() == 1
        for _ in range(round(seconds / source.interval)):  # a notification every half second
            source.notify_one()
            await asyncio.sleep(source.interval)
        if seconds > 10:  # the long outage lasts until the catch-up has failed again and again
            await wait_until(
                lambda: running.log.getvalue().count("; retrying in ") >= 3, what="three failed catch-ups"
            )
        assert gts.open_streams("alice") == 0  # the outage was real: no stream came back meanwhile
        gts.faults.down = False
        source.notify_one()

        reading = await wait_for_markers(alice, room, bot_user, source.created, timeout=60.0)
        for _ in range(2):  # relaying really resumed: new notifications still arrive
            source.notify_one()
        reading = await wait_for_markers(alice, room, bot_user, source.created, timeout=60.0)
        await running.shutdown()

    problems = exactly_once_problems(reading, source.created)
    assert not problems, "; ".join(problems)
    logs = running.log.getvalue()
    assert "stream ended" in logs  # the relay did see the outage


@pytest.mark.parametrize("outage", ["restart", "freeze"])
async def test_homeserver_down_for_a_while_loses_nothing(
    gts: FakeGoToSocial, tmp_path: Path, outage: str
) -> None:
    """Synapse stopped and started again on the same port and data ("restart"), or SIGSTOPped and
    SIGCONTed ("freeze": it accepts connections but answers nothing). A homeserver of its own, so the
    shared one stays up for the other tests."""
    workdir = tmp_path / "synapse"
    workdir.mkdir()
    process = SynapseProcess(workdir)
    homeserver = await asyncio.to_thread(process.start)
    source = MentionSource(gts, "alice", interval=0.5)
    try:
        bot_user, bot_password = await new_bot_account(homeserver)
        config = bot_config(homeserver, bot_user, bot_password, tmp_path / "data")
        alice = await Human.create(homeserver, tmp_path / "alice-store", "alice")
        try:
            async with asyncio.timeout(HANG_GUARD), run_bot(config) as running:
                room = await open_dm(alice, bot_user)
                reply, _ = await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
                assert "Connected as" in reply
                assert source.notify_one() in await next_text(alice, room, bot_user)
                devices = await homeserver.devices(bot_user)

                await _homeserver_outage(process, outage, source, seconds=6.0)
                source.notify_one()

                await wait_for_markers(alice, room, bot_user, source.created, timeout=90.0)
                source.notify_one()  # relaying goes on after the outage
                reading = await wait_for_markers(alice, room, bot_user, source.created, timeout=60.0)
                await running.shutdown()
        finally:
            await alice.close()
        assert await homeserver.devices(bot_user) == devices  # the session survived: no new login
    finally:
        await asyncio.to_thread(process.stop)

    problems = exactly_once_problems(reading, source.created)
    assert not problems, (
        f"{'; '.join(problems)}\n--- bot log ---\n{running.log.getvalue()[-4000:]}"
        f"\n--- Synapse log ---\n{process.log_tail(30)}"
    )


async def _homeserver_outage(
    process: SynapseProcess, outage: str, source: MentionSource, *, seconds: float
) -> None:
    """Take the homeserver away for about `seconds` while a notification arrives every half second."""
    assert process.proc is not None
    pid = process.proc.pid
    if outage == "restart":
        await asyncio.to_thread(process.stop)
    else:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(round(seconds / source.interval)):
            source.notify_one()
            await asyncio.sleep(source.interval)
    finally:
        if outage == "restart":
            await asyncio.to_thread(process.restart)
        else:
            os.kill(pid, signal.SIGCONT)
