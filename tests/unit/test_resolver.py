"""SystemResolver: its own bounded thread pool, one lookup per host, a short positive cache.

The blocking lookup is injected (a real thread blocks in it until the test lets it go): a name server that
hangs cannot be produced on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest

from bot.errors import DnsError, InstanceTimeoutError, LookupsBusyError
from bot.fediverse.guard import AddressGuard
from bot.fediverse.resolver import IPAddress, SystemResolver

PUBLIC = ipaddress.ip_address("93.184.216.34")


class HangingNameServer:
    """A blocking lookup that holds each thread until `release()`; names starting with "ok" then resolve."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.entered = threading.Semaphore(0)

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        with self._lock:
            self.calls.append(host)
        self.entered.release()
        self._released.wait()
        if not host.startswith("ok"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [PUBLIC]

    async def wait_entered(self, count: int) -> None:
        """Until `count` more lookups are blocked in their threads."""
        for _ in range(count):
            await asyncio.to_thread(self.entered.acquire)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def server() -> Iterator[HangingNameServer]:
    hanging = HangingNameServer()
    yield hanging
    hanging.release()  # never leave a thread blocked, whatever the test did


async def test_a_full_pool_refuses_at_once_and_leaves_the_default_executor_free(
    server: HangingNameServer,
) -> None:
    resolver = SystemResolver(max_lookups=2, lookup=server)
    waits = [asyncio.create_task(resolver.resolve(f"a{n}.evil.example", 443)) for n in range(2)]
    await server.wait_entered(2)
    with pytest.raises(LookupsBusyError, match="try again"):
        await resolver.resolve("a3.evil.example", 443)
    assert server.calls.count("a3.evil.example") == 0
    # What formatting and other to_thread work use is untouched by the hung lookups.
    assert await asyncio.to_thread(lambda: "free") == "free"
    server.release()
    for wait in waits:
        with pytest.raises(DnsError, match="could not be found"):
            await wait
    resolver.close()


async def test_a_lookup_nobody_waits_for_still_holds_its_thread_until_it_returns(
    server: HangingNameServer,
) -> None:
    resolver = SystemResolver(max_lookups=1, lookup=server)
    gave_up = asyncio.create_task(resolver.resolve("ok.example", 443))
    await server.wait_entered(1)
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    assert resolver.lookups_in_flight == 1
    with pytest.raises(LookupsBusyError):
        await resolver.resolve("other.example", 443)
    joined = asyncio.create_task(resolver.resolve("OK.example", 443))  # the same host joins that lookup
    server.release()
    assert await joined == [PUBLIC]
    assert server.calls == ["ok.example"]
    assert resolver.lookups_in_flight == 0
    resolver.close()


async def test_concurrent_lookups_of_one_host_share_one_thread(server: HangingNameServer) -> None:
    resolver = SystemResolver(max_lookups=1, lookup=server)
    waits = [asyncio.create_task(resolver.resolve("ok.example", 443)) for _ in range(5)]
    await server.wait_entered(1)
    server.release()
    assert await asyncio.gather(*waits) == [[PUBLIC]] * 5
    assert server.calls == ["ok.example"]
    resolver.close()


async def test_answers_are_remembered_for_a_short_while_and_failures_not_at_all(
    server: HangingNameServer,
) -> None:
    now = [1000.0]
    server.release()
    resolver = SystemResolver(lookup=server, cache_seconds=60.0, clock=lambda: now[0])
    assert await resolver.resolve("ok.example", 443) == [PUBLIC]
    assert await resolver.resolve("ok.example", 443) == [PUBLIC]
    assert server.calls == ["ok.example"]
    now[0] += 61.0
    assert await resolver.resolve("ok.example", 443) == [PUBLIC]
    assert server.calls == ["ok.example"] * 2
    for _ in range(2):
        with pytest.raises(DnsError):
            await resolver.resolve("missing.example", 443)
    assert server.calls.count("missing.example") == 2
    resolver.close()


async def test_the_cache_is_bounded(server: HangingNameServer) -> None:
    server.release()
    resolver = SystemResolver(lookup=server, cache_entries=2)
    for host in ("ok1.example", "ok2.example", "ok3.example", "ok1.example"):
        await resolver.resolve(host, 443)
    assert server.calls == ["ok1.example", "ok2.example", "ok3.example", "ok1.example"]
    resolver.close()


async def test_the_guard_passes_a_busy_refusal_through_unchanged(server: HangingNameServer) -> None:
    resolver = SystemResolver(max_lookups=1, lookup=server)
    guard = AddressGuard(resolver)
    held = asyncio.create_task(guard.checked_addresses("a1.evil.example", 443))
    await server.wait_entered(1)
    with pytest.raises(LookupsBusyError, match="try again"):
        await guard.checked_addresses("a2.evil.example", 443)
    server.release()
    with pytest.raises(DnsError):
        await held
    resolver.close()


async def test_the_websocket_path_bounds_the_lookup_by_the_connect_timeout(server: HangingNameServer) -> None:
    resolver = SystemResolver(lookup=server)
    guard = AddressGuard(resolver)
    with pytest.raises(InstanceTimeoutError, match=r"slow\.example within 0\.05 seconds"):
        await guard.open_socket("slow.example", 443, connect_timeout=0.05)
    server.release()
    resolver.close()
