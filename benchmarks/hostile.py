"""Hostile-instance benchmark (prints figures; not a test).

    .venv/bin/python -m benchmarks.hostile [--accounts 100] [--frame-bytes 1048576] [--seconds 600]

A hostile instance (a small aiohttp server in a child process, on loopback) streams frames of
`--frame-bytes` to every connected account as fast as each connection takes them: valid notifications
whose status content fills the frame, and every tenth a frame of `[[],[],…]`. Its REST endpoint
answers an empty page. The bot side is the real RelayManager with a real SQLite database; the
homeserver side rate-limits the bot (0.2 sends/s, burst 10, waited out like the Matrix adapter does).

Every `--every` seconds it prints the bot process's RSS now and at peak, the relay's queued bytes and
notifications, and the frames the instance has sent. Target: peak RSS under 300 MB and flat.
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
from pathlib import Path
from typing import Any

from benchmarks.relay import rate_limited_matrix, setup_db
from bot.config import FediverseConfig, RelayConfig
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import build_http_client
from bot.fediverse.streaming import build_stream_connector
from bot.relay.manager import RelayManager
from bot.relay.tuning import RelayTuning
from bot.store.keyring import KeyRing

# --- the hostile instance, in its own process ----------------------------------------------------------


def _notification_frame(n: int, frame_bytes: int) -> str:
    account = {"id": "01A", "username": "evil", "acct": "evil", "url": None, "display_name": "Evil"}
    body = {
        "id": f"{n:020d}",
        "type": "mention",
        "created_at": "2026-11-28T03:08:32.000Z",
        "account": account,
        "status": {"id": f"{n:020d}", "content": "", "url": None},
    }
    filler = max(0, frame_bytes - len(json.dumps(body)) - 200)
    body["status"]["content"] = "<p>" + "x" * filler + "</p>"
    return json.dumps({"stream": ["user:notification"], "event": "notification", "payload": json.dumps(body)})


def _lists_frame(frame_bytes: int) -> str:
    return json.dumps({"event": "notification", "payload": "[" + ",".join(["[]"] * (frame_bytes // 3)) + "]"})


async def serve_hostile(accounts: int, frame_bytes: int) -> None:
    from aiohttp import web

    sent = {"frames": 0, "connections": 0}
    counter = iter(range(1, 10**12))
    lists = _lists_frame(frame_bytes)

    async def notifications(request: web.Request) -> web.Response:
        return web.json_response([])

    async def streaming(request: web.Request) -> web.WebSocketResponse:
        token = request.headers.get("Sec-WebSocket-Protocol")  # the bot sends its token here; echo it
        ws = web.WebSocketResponse(protocols=(token,) if token else (), autoping=True, max_msg_size=0)
        await ws.prepare(request)
        sent["connections"] += 1
        reader = asyncio.create_task(ws.receive())  # answers pings; ends when the client closes
        try:
            while not ws.closed and not reader.done():
                k = next(counter)
                frame = lists if k % 10 == 0 else _notification_frame(k, frame_bytes)
                await ws.send_str(frame)
                sent["frames"] += 1
        except (ConnectionError, RuntimeError):
            pass
        finally:
            reader.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/notifications", notifications)
    app.router.add_get("/api/v1/streaming", streaming)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    info = {
        "base_url": f"http://127.0.0.1:{port}",
        "tokens": [f"token-{i}" for i in range(accounts)],
        "account_ids": [f"01ACCOUNT{i:06d}" for i in range(accounts)],
    }
    print(json.dumps(info), flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if json.loads(line)["cmd"] == "quit":
            break
        print(json.dumps(sent), flush=True)
    await runner.cleanup()


# --- the bot side --------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def bench(args: argparse.Namespace) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.hostile",
        "--serve",
        "--accounts",
        str(args.accounts),
        "--frame-bytes",
        str(args.frame_bytes),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    info: dict[str, Any] = json.loads(await proc.stdout.readline())

    async def instance_figures() -> dict[str, int]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(b'{"cmd": "figures"}\n')
        await proc.stdin.drain()
        figures: dict[str, int] = json.loads(await proc.stdout.readline())
        return figures

    settings = FediverseConfig(allow_http=True, allow_private_addresses=True, request_timeout=30.0)
    keyring = KeyRing.generate()
    tmp = tempfile.TemporaryDirectory()
    try:
        async with build_http_client(settings) as http:
            engine, sessions = await setup_db(
                Path(tmp.name) / "h.sqlite3", keyring, info, range(args.accounts), "0"
            )
            sender = rate_limited_matrix(rate=0.2, burst=10)
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
                tuning=RelayTuning(),
                rng=random.Random(3),
            )
            print(
                f"hostile instance: {args.accounts} accounts, frames of {args.frame_bytes:,} bytes, "
                f"homeserver 0.2 sends/s; {args.seconds:.0f} s"
            )
            start = time.monotonic()
            await relay.start()
            peak = 0.0
            while (elapsed := time.monotonic() - start) < args.seconds:
                await asyncio.sleep(min(args.every, args.seconds - elapsed))
                now = _rss_mb()
                peak = max(peak, now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                figures = await instance_figures()
                print(
                    f"t={time.monotonic() - start:5.0f} s  RSS {now:6.1f} MB  peak {peak:6.1f} MB  "
                    f"queued {relay.queued_bytes / 2**20:6.2f} MiB / {relay.queued_notifications:5d} items  "
                    f"streams {relay.live_streams:3d}  sent {len(sender.events):4d} messages  "
                    f"instance: {figures['frames']:7d} frames, {figures['connections']:5d} connections",
                    flush=True,
                )
            await relay.stop()
            await engine.dispose()
        print(f"peak RSS of the bot process: {peak:.0f} MB (target: under 300 MB, flat)")
    finally:
        proc.stdin.write(b'{"cmd": "quit"}\n')
        await proc.stdin.drain()
        await proc.wait()
        tmp.cleanup()


async def _no_notify(user: str, plain: str, html: str) -> None:
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.hostile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--frame-bytes", type=int, default=1_048_576, help="size of each frame the instance sends")
    p.add_argument("--seconds", type=float, default=600.0, help="length of the run (default 10 minutes)")
    p.add_argument("--every", type=float, default=30.0, help="print figures this often, seconds")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve_hostile(args.accounts, args.frame_bytes))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
