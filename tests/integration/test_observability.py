"""Metrics exposition and the /healthz + /metrics listener, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.observability import (
    CheckResult,
    DatabaseCheck,
    HealthCheck,
    HealthServer,
    Metrics,
    SyncFreshnessCheck,
    sqlalchemy_ping,
)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(body: bytes | str) -> list[Sample]:
    text = body.decode() if isinstance(body, bytes) else body
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(all_samples: Iterable[Sample], name: str, **labels: str) -> float:
    matching = [s.value for s in all_samples if s.name == name and s.labels == labels]
    assert len(matching) == 1, f"{name}{labels}: {len(matching)} samples"
    return matching[0]


def touch_everything(metrics: Metrics) -> None:
    metrics.set_connected_accounts(3)
    metrics.set_live_streams(2)
    metrics.notification_relayed("mention", 0.2)
    metrics.notification_relayed("favourite", 4.0)
    metrics.notification_failed("follow")
    metrics.instance_request("social.example", 200)
    metrics.instance_request("social.example", 429)
    metrics.matrix_send()
    metrics.matrix_send(rate_limited=True)
    metrics.set_pending_flows(1)
    metrics.set_open_circuit_breakers(1)


# --- Metrics -----------------------------------------------------------------------------------------


def test_every_instrument_renders_in_prometheus_text_format() -> None:
    metrics = Metrics(version="1.2.3")
    touch_everything(metrics)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    got = samples(body)

    assert value(got, "gtsbot_build_info", version="1.2.3") == 1
    assert value(got, "gtsbot_connected_accounts") == 3
    assert value(got, "gtsbot_live_streams") == 2
    assert value(got, "gtsbot_notifications_relayed_total", type="mention") == 1
    assert value(got, "gtsbot_notifications_relayed_total", type="favourite") == 1
    assert value(got, "gtsbot_notifications_failed_total", type="follow") == 1
    assert value(got, "gtsbot_relay_latency_seconds_count") == 2
    assert value(got, "gtsbot_relay_latency_seconds_sum") == pytest.approx(4.2)
    assert value(got, "gtsbot_relay_latency_seconds_bucket", le="0.25") == 1
    assert value(got, "gtsbot_relay_latency_seconds_bucket", le="5.0") == 2
    assert value(got, "gtsbot_relay_latency_seconds_bucket", le="30.0") == 2
    assert value(got, "gtsbot_instance_requests_total", instance="social.example") == 2
    assert value(got, "gtsbot_instance_rate_limited_total", instance="social.example") == 1
    assert value(got, "gtsbot_matrix_sends_total") == 2
    assert value(got, "gtsbot_matrix_rate_limited_total") == 1
    assert value(got, "gtsbot_pending_connect_flows") == 1
    assert value(got, "gtsbot_circuit_breakers_open") == 1


def test_known_types_start_at_zero_and_unknown_types_are_other() -> None:
    metrics = Metrics(version="0")
    before = samples(metrics.render()[0])
    assert value(before, "gtsbot_notifications_relayed_total", type="reblog") == 0
    assert value(before, "gtsbot_notifications_failed_total", type="other") == 0

    metrics.notification_relayed("some.new_type")
    metrics.notification_relayed("another-new-type")
    metrics.notification_failed("x" * 500)
    after = samples(metrics.render()[0])
    assert value(after, "gtsbot_notifications_relayed_total", type="other") == 2
    assert value(after, "gtsbot_notifications_failed_total", type="other") == 1
    type_labels = {s.labels["type"] for s in after if s.name == "gtsbot_notifications_relayed_total"}
    assert "some.new_type" not in type_labels
    assert "other" in type_labels


def test_latency_edge_cases_and_instance_label_normalisation() -> None:
    metrics = Metrics(version="0")
    metrics.notification_relayed("mention", -3.0)  # instance clock ahead of ours
    metrics.notification_relayed("mention", None)  # backlog: counted, latency not observed
    metrics.instance_request("Social.Example.", 200)
    metrics.instance_request("social.example", 503)
    got = samples(metrics.render()[0])
    assert value(got, "gtsbot_notifications_relayed_total", type="mention") == 2
    assert value(got, "gtsbot_relay_latency_seconds_count") == 1
    assert value(got, "gtsbot_relay_latency_seconds_bucket", le="0.01") == 1
    assert value(got, "gtsbot_instance_requests_total", instance="social.example") == 2
    assert not [s for s in got if s.name == "gtsbot_instance_rate_limited_total"]


def test_two_metrics_instances_share_nothing() -> None:
    first = Metrics(version="1")
    second = Metrics(version="2")
    touch_everything(first)
    first.notification_relayed("mention", 1.0)

    untouched = samples(second.render()[0])
    assert value(untouched, "gtsbot_build_info", version="2") == 1
    assert not [s for s in untouched if s.labels.get("version") == "1"]
    assert value(untouched, "gtsbot_notifications_relayed_total", type="mention") == 0
    assert value(untouched, "gtsbot_connected_accounts") == 0
    assert value(untouched, "gtsbot_relay_latency_seconds_count") == 0
    assert not [s for s in untouched if s.name == "gtsbot_instance_requests_total"]
    assert value(samples(first.render()[0]), "gtsbot_notifications_relayed_total", type="mention") == 2


# --- Health checks -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def aiosqlite_threads_end() -> AsyncIterator[None]:
    """After a failed connect aiosqlite stops its worker thread without waiting for it; on a busy machine
    that thread can outlive the test's event loop and fail a later test ("Event loop is closed"). Torn
    down last (after the engines are disposed), this waits for the test's worker threads to end."""
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 60)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}")
    yield engine
    await engine.dispose()


@pytest.fixture
async def broken_sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    a_directory = tmp_path / "not-a-file"
    a_directory.mkdir()
    engine = create_async_engine(f"sqlite+aiosqlite:///{a_directory}")
    yield engine
    await engine.dispose()


async def test_sync_freshness_check() -> None:
    clock = ManualClock()
    check = SyncFreshnessCheck(clock, max_age=90)
    assert await check() == CheckResult(False, "matrix sync: no successful sync yet")
    check.mark_synced()
    clock.now += 90
    assert (await check()).ok
    clock.now += 1
    result = await check()
    assert not result.ok
    assert "91 s ago" in result.reason
    check.mark_synced()
    assert (await check()).ok


async def test_database_check_against_real_sqlite(
    sqlite_engine: AsyncEngine, broken_sqlite_engine: AsyncEngine
) -> None:
    assert await DatabaseCheck(sqlalchemy_ping(sqlite_engine), timeout=60)() == CheckResult(
        True, "database: reachable"
    )
    assert await DatabaseCheck(sqlalchemy_ping(broken_sqlite_engine), timeout=60)() == CheckResult(
        False, "database: ping failed (OperationalError)"
    )


async def test_database_check_times_out_on_a_server_that_never_answers() -> None:
    # A real TCP listener that accepts PostgreSQL connections and never says a word.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_async_engine(f"postgresql+asyncpg://bot:hunter2@127.0.0.1:{port}/bot")
    try:
        result = await DatabaseCheck(sqlalchemy_ping(engine), timeout=0.3)()
    finally:
        await engine.dispose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert result == CheckResult(False, "database: no answer within 0.3 s")
    assert accepted, "the ping never reached the listener"


async def test_database_check_never_echoes_the_exception_text() -> None:
    async def ping() -> None:
        raise ConnectionError("could not connect to postgresql://bot:hunter2@db/bot")

    result = await DatabaseCheck(ping, timeout=60)()
    assert result == CheckResult(False, "database: ping failed (ConnectionError)")


# --- HTTP listener -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Harness:
    server: HealthServer
    client: httpx.AsyncClient
    clock: ManualClock
    sync: SyncFreshnessCheck
    metrics: Metrics


async def start_harness(checks: list[HealthCheck], clock: ManualClock, sync: SyncFreshnessCheck) -> Harness:
    metrics = Metrics(version="9.9.9")
    server = HealthServer("127.0.0.1", 0, metrics, checks)
    await server.start()
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10)
    return Harness(server, client, clock, sync, metrics)


async def stop_harness(h: Harness) -> None:
    await h.client.aclose()
    await h.server.stop()


@pytest.fixture
async def healthy(sqlite_engine: AsyncEngine) -> AsyncIterator[Harness]:
    clock = ManualClock()
    sync = SyncFreshnessCheck(clock, max_age=90)
    sync.mark_synced()
    h = await start_harness([sync, DatabaseCheck(sqlalchemy_ping(sqlite_engine), timeout=60)], clock, sync)
    yield h
    await stop_harness(h)


async def test_healthz_ok_when_every_check_passes(healthy: Harness) -> None:
    response = await healthy.client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "status": "ok",
        "checks": ["matrix sync: last successful sync 0 s ago", "database: reachable"],
    }


async def test_healthz_503_when_the_sync_is_stale(healthy: Harness) -> None:
    healthy.clock.now += 600
    response = await healthy.client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "reasons": ["matrix sync: last successful sync 600 s ago (limit 90 s)"],
    }
    healthy.sync.mark_synced()
    assert (await healthy.client.get("/healthz")).status_code == 200


async def test_healthz_503_names_every_failing_check(broken_sqlite_engine: AsyncEngine) -> None:
    clock = ManualClock()
    sync = SyncFreshnessCheck(clock, max_age=90)  # never synced
    h = await start_harness(
        [sync, DatabaseCheck(sqlalchemy_ping(broken_sqlite_engine), timeout=60)], clock, sync
    )
    try:
        response = await h.client.get("/healthz")
    finally:
        await stop_harness(h)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "reasons": ["matrix sync: no successful sync yet", "database: ping failed (OperationalError)"],
    }


async def test_healthz_503_when_the_database_ping_times_out() -> None:
    never = asyncio.Event()

    async def stuck_ping() -> None:
        await never.wait()

    clock = ManualClock()
    sync = SyncFreshnessCheck(clock, max_age=90)
    sync.mark_synced()
    h = await start_harness([sync, DatabaseCheck(stuck_ping, timeout=0.2)], clock, sync)
    try:
        response = await h.client.get("/healthz")
    finally:
        await stop_harness(h)
    assert response.status_code == 503
    assert response.json()["reasons"] == ["database: no answer within 0.2 s"]


async def test_a_check_that_raises_is_a_failure_without_its_text() -> None:
    class Exploding:
        async def __call__(self) -> CheckResult:
            raise RuntimeError("token=hunter2")

    clock = ManualClock()
    sync = SyncFreshnessCheck(clock, max_age=90)
    sync.mark_synced()
    h = await start_harness([sync, Exploding()], clock, sync)
    try:
        response = await h.client.get("/healthz")
    finally:
        await stop_harness(h)
    assert response.status_code == 503
    assert response.json()["reasons"] == ["Exploding: check raised RuntimeError"]
    assert "hunter2" not in response.text


async def test_metrics_endpoint_serves_the_instance_registry(healthy: Harness) -> None:
    touch_everything(healthy.metrics)
    response = await healthy.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == healthy.metrics.render()[1]
    got = samples(response.text)
    assert value(got, "gtsbot_build_info", version="9.9.9") == 1
    assert value(got, "gtsbot_matrix_rate_limited_total") == 1


@pytest.mark.parametrize("path", ["/", "/healthz/", "/metrics/extra", "/debug", "/../etc/passwd"])
async def test_nothing_else_is_served(healthy: Harness, path: str) -> None:
    assert (await healthy.client.get(path)).status_code == 404


async def test_only_get_and_head(healthy: Harness) -> None:
    assert (await healthy.client.post("/healthz")).status_code == 405
    assert (await healthy.client.head("/metrics")).status_code == 200


async def test_port_zero_binds_distinct_ports() -> None:
    first = HealthServer("127.0.0.1", 0, Metrics(version="0"), [])
    second = HealthServer("127.0.0.1", 0, Metrics(version="0"), [])
    async with first, second:
        assert first.port != second.port
        assert first.port > 0
        async with httpx.AsyncClient() as client:
            # No checks configured: trivially healthy.
            response = await client.get(f"http://127.0.0.1:{first.port}/healthz")
            assert response.json() == {"status": "ok", "checks": []}
    with pytest.raises(RuntimeError):
        _ = first.port


async def test_start_twice_is_refused() -> None:
    server = HealthServer("127.0.0.1", 0, Metrics(version="0"), [])
    async with server:
        with pytest.raises(RuntimeError):
            await server.start()


def test_probing_endless_hosts_does_not_grow_the_instance_labels() -> None:
    metrics = Metrics(version="0", max_instance_labels=10)
    for n in range(1000):
        metrics.instance_request("social.example", 200)  # a connected instance, busy all along
        metrics.instance_request(f"rand-{n}.evil.example", 404)
    got = samples(metrics.render()[0])
    hosts = {s.labels["instance"] for s in got if s.name == "gtsbot_instance_requests_total"}
    assert len(hosts) <= 10
    assert "social.example" in hosts
    assert value(got, "gtsbot_instance_requests_total", instance="social.example") == 1000
