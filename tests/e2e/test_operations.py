"""Running the bot as an operator would: metrics and health over HTTP, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import running_bot
from tests.e2e.bot_harness import bot_config, connect_account, new_bot_account, next_text, open_dm
from tests.e2e.conftest import MakeHuman
from tests.e2e.synapse import Synapse
from tests.fakes.gotosocial import FakeGoToSocial
from tests.waiting import wait_for_value

pytestmark = pytest.mark.e2e

EMAIL, PASSWORD = "alice@example.org", "Long-Strong-Passw0rd!"


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


async def test_metrics_and_health_follow_a_real_run(
    synapse: Synapse, make_human: MakeHuman, tmp_path: Path
) -> None:
    bot_user, bot_password = await new_bot_account(synapse)
    config = bot_config(
        synapse,
        bot_user,
        bot_password,
        tmp_path / "data",
        GTS_BOT_OBSERVABILITY__ENABLED="true",
        GTS_BOT_OBSERVABILITY__PORT="0",
    )
    alice = await make_human("alice")
    async with FakeGoToSocial() as gts, running_bot(config) as bot:
        gts.add_user("alice", EMAIL, PASSWORD)
        sync = asyncio.create_task(bot.matrix.run(bot.router.handle))
        try:
            room = await open_dm(alice, bot_user)
            await connect_account(alice, room, bot_user, gts, EMAIL, PASSWORD)
            gts.notify("alice", "favourite", "bob", status_text="my post")
            assert "favourited your post" in await next_text(alice, room, bot_user)
            assert bot.health is not None
            base = f"http://127.0.0.1:{bot.health.port}"
            async with httpx.AsyncClient() as http:
                health = await http.get(base + "/healthz")
                # The counter moves when the cursor is committed, just after the message was accepted.
                async def relayed() -> dict[str, float] | None:
                    samples = _samples((await http.get(base + "/metrics")).text)
                    moved = samples["gtsbot_notifications_relayed_total{type=favourite}"] >= 1
                    return samples if moved else None

                metrics = await wait_for_value(relayed, interval=0.05, what="the relayed counter to move")
        finally:
            await bot.matrix.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await sync
    assert health.status_code == 200
    assert metrics["gtsbot_notifications_relayed_total{type=favourite}"] == 1
    assert metrics["gtsbot_live_streams{}"] == 1
    assert metrics["gtsbot_matrix_sends_total{}"] >= 4  # greeting, instructions, connected, favourite
    requests = [
        v for k, v in metrics.items() if k.startswith("gtsbot_instance_requests_total{instance=127.0.0.1")
    ]
    assert requests
    assert requests[0] >= 4  # probe, app registration, token, verify, …


async def test_sigterm_stops_the_bot_cleanly(synapse: Synapse, tmp_path: Path) -> None:
    bot_user, bot_password = await new_bot_account(synapse)
    env = {
        **os.environ,
        "GTS_BOT_CONFIG": "",
        "GTS_BOT_MATRIX__HOMESERVER": synapse.base_url,
        "GTS_BOT_MATRIX__USER_ID": bot_user,
        "GTS_BOT_MATRIX__PASSWORD": bot_password,
        "GTS_BOT_DATA_DIR": str(tmp_path / "data"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = b""
    while b"gts-bot is running" not in output:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, output.decode(errors="replace")
        output += line
    proc.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    output += rest
    assert proc.returncode == 0, output.decode(errors="replace")
    assert b"gts-bot stopped" in output
    assert bot_password.encode() not in output
