"""The optional HTTP listener: `/healthz` and `/metrics`, nothing else.

Health is a list of injected checks, each an async callable answering `CheckResult(ok, reason)`.
`/healthz` runs them all concurrently: 200 `{"status": "ok", "checks": [...]}` when every check passes,
else 503 `{"status": "unhealthy", "reasons": [...]}` naming the failing ones. Reasons never carry
exception text (a database error can echo its URL, password included), only the exception's class name.

The listener binds where it is told (config default: loopback). It has no authentication, so it must not
be reachable from outside the host.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.observability.metrics import Metrics

__all__ = [
    "CheckResult",
    "DatabaseCheck",
    "HealthCheck",
    "HealthServer",
    "SyncFreshnessCheck",
    "sqlalchemy_ping",
]


class CheckResult(NamedTuple):
    ok: bool
    reason: str


class HealthCheck(Protocol):
    async def __call__(self) -> CheckResult: ...


Clock = Callable[[], float]


class SyncFreshnessCheck:
    """Healthy while the last successful Matrix sync is at most `max_age` seconds old.

    The sync loop calls `mark_synced()` after each successful sync. Before the first one the check
    fails; the container HEALTHCHECK's start period covers the initial sync.
    """

    def __init__(self, clock: Clock = time.monotonic, max_age: float = 90.0) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self._clock = clock
        self._max_age = max_age
        self._last_sync: float | None = None

    def mark_synced(self) -> None:
        self._last_sync = self._clock()

    async def __call__(self) -> CheckResult:
        if self._last_sync is None:
            return CheckResult(False, "matrix sync: no successful sync yet")
        age = self._clock() - self._last_sync
        if age > self._max_age:
            return CheckResult(
                False, f"matrix sync: last successful sync {age:.0f} s ago (limit {self._max_age:g} s)"
            )
        return CheckResult(True, f"matrix sync: last successful sync {age:.0f} s ago")


class DatabaseCheck:
    """Healthy when `ping()` completes within `timeout` seconds without raising."""

    def __init__(self, ping: Callable[[], Awaitable[None]], timeout: float = 2.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._ping = ping
        self._timeout = timeout

    async def __call__(self) -> CheckResult:
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping()
        except TimeoutError:
            return CheckResult(False, f"database: no answer within {self._timeout:g} s")
        except Exception as exc:
            return CheckResult(False, f"database: ping failed ({type(exc).__name__})")
        return CheckResult(True, "database: reachable")


def sqlalchemy_ping(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    """A ping for `DatabaseCheck`: `SELECT 1` on a pooled connection of `engine`."""

    async def ping() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return ping


async def _run_check(check: HealthCheck) -> CheckResult:
    try:
        return await check()
    except Exception as exc:
        # A check is supposed to report, not raise; if it does, that is a failure of what it checks.
        return CheckResult(False, f"{type(check).__name__}: check raised {type(exc).__name__}")


def _json(body: dict[str, object], status: int) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class HealthServer:
    """aiohttp server for `/healthz` and `/metrics` on `host:port` (port 0: any free port, see `.port`)."""

    def __init__(self, host: str, port: int, metrics: Metrics, checks: Sequence[HealthCheck]) -> None:
        self._host = host
        self._requested_port = port
        self._metrics = metrics
        self._checks = tuple(checks)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound; only valid between `start()` and `stop()`."""
        if self._port is None:
            raise RuntimeError("HealthServer is not running")
        return self._port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("HealthServer is already running")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_handler)
        # No access log: the container health check would write a line every 30 s.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        results = await asyncio.gather(*(_run_check(c) for c in self._checks))
        failing = [r.reason for r in results if not r.ok]
        if failing:
            return _json({"status": "unhealthy", "reasons": failing}, 503)
        return _json({"status": "ok", "checks": [r.reason for r in results]}, 200)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.render()
        # content_type= in aiohttp refuses parameters (the version / charset), so set the header directly.
        return web.Response(body=body, headers={"Content-Type": content_type})
