"""Name lookups on the resolver's own small thread pool.

`getaddrinfo` blocks a thread until the name servers answer, and a hostile name server can make that take
10-30 seconds; cancelling the wait does not free the thread. On the event loop's default executor such
lookups would starve everything else that runs there (`asyncio.to_thread`). So `SystemResolver` owns a
bounded pool, runs at most one lookup per host at a time (later callers share it), remembers answers for
a short while, and refuses at once (`LookupsBusyError`) when every thread is taken, instead of queueing.
Whoever builds it closes it (`close`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import idna

from bot.errors import DnsError, LookupsBusyError

__all__ = ["BlockingLookup", "IPAddress", "Resolver", "SystemResolver", "display_host", "system_lookup"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A blocking lookup: (host, port) → addresses; raises socket.gaierror (or UnicodeError) when there are none.
BlockingLookup = Callable[[str, int], list[IPAddress]]


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """All addresses of `host`. Raises DnsError when there are none."""
        ...


def display_host(host: str) -> str:
    """An ASCII host as a person reads it."""
    if ":" in host:
        return f"[{host}]"
    try:
        return idna.decode(host)
    except idna.IDNAError:
        return host


def system_lookup(host: str, port: int) -> list[IPAddress]:
    """The operating system's answer (blocking)."""
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


class SystemResolver:
    """Resolves with `lookup` (getaddrinfo) on its own pool of `max_lookups` threads; see the module doc."""

    def __init__(
        self,
        *,
        max_lookups: int = 8,
        cache_seconds: float = 60.0,
        cache_entries: int = 1024,
        lookup: BlockingLookup = system_lookup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_lookups = max_lookups
        self._cache_seconds = cache_seconds
        self._cache_entries = cache_entries
        self._lookup = lookup
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: dict[tuple[str, int], asyncio.Future[list[IPAddress]]] = {}
        self._cache: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}

    @property
    def lookups_in_flight(self) -> int:
        """Lookups whose thread has not returned yet (including ones every caller stopped waiting for)."""
        return len(self._in_flight)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        key = (host.lower(), port)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > self._clock():
                return list(cached[1])
            del self._cache[key]
        pending = self._in_flight.get(key)
        if pending is None:
            pending = self._start(key)
        try:
            # Shielded: a caller that stops waiting leaves the lookup to finish for the others (and the
            # thread is busy until then whatever we do).
            addresses = await asyncio.shield(pending)
        except (socket.gaierror, UnicodeError) as exc:
            raise DnsError(f"The name {display_host(host)} could not be found (DNS lookup failed).") from exc
        if not addresses:
            raise DnsError(f"The name {display_host(host)} has no addresses.")
        return list(addresses)

    def _start(self, key: tuple[str, int]) -> asyncio.Future[list[IPAddress]]:
        if len(self._in_flight) >= self._max_lookups:
            raise LookupsBusyError(
                "The bot is waiting on too many slow name lookups right now; try again in a minute."
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_lookups, thread_name_prefix="gts-dns")
        pending = asyncio.get_running_loop().run_in_executor(self._executor, self._lookup, *key)
        self._in_flight[key] = pending
        pending.add_done_callback(lambda done: self._finished(key, done))
        return pending

    def _finished(self, key: tuple[str, int], done: asyncio.Future[list[IPAddress]]) -> None:
        del self._in_flight[key]
        if done.cancelled() or done.exception() is not None:  # retrieved, so never "never retrieved"
            return
        addresses = done.result()
        if not addresses or self._cache_seconds <= 0:
            return
        if len(self._cache) >= self._cache_entries:
            now = self._clock()
            for stale in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= self._cache_entries:
                del self._cache[next(iter(self._cache))]  # the oldest answer
        self._cache[key] = (self._clock() + self._cache_seconds, addresses)

    def close(self) -> None:
        """Stop the pool without waiting for lookups still blocked in the operating system."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
