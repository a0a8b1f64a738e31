"""The address guard: which IP addresses the bot may connect to, and an HTTP stack that enforces it.

Every outgoing connection (HTTP and websocket) resolves the host with an injectable `Resolver`, checks
*every* address with `address_problem`, and then connects to the checked IP literal itself, so a DNS answer
that changes between check and connect cannot matter. TLS still verifies the certificate against the host
name, because httpcore passes the origin's host as `server_hostname` to `start_tls`.

The HTTP stack is built from public parts only: `GuardedBackend` is an `httpcore.AsyncNetworkBackend`,
an `httpcore.AsyncConnectionPool` uses it, and `GuardedTransport` (an `httpx.AsyncBaseTransport`) hands
httpx's requests to that pool and httpcore's errors back as httpx's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Protocol

import httpcore
import httpx

from bot.errors import (
    DnsError,
    ForbiddenAddressError,
    InstanceTimeoutError,
    InstanceUnreachableError,
    LookupsBusyError,
)
from bot.fediverse.resolver import IPAddress, Resolver, SystemResolver, display_host

__all__ = [
    "AddressGuard",
    "GuardedBackend",
    "GuardedTransport",
    "HttpSettings",
    "IPAddress",
    "Resolver",
    "SystemResolver",
    "address_problem",
    "build_http_client",
    "make_ssl_context",
]

# Cloud metadata endpoints. 169.254.169.254 is link-local anyway; fd00:ec2::254 is ULA; listed for clarity.
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class HttpSettings(Protocol):
    """The part of `FediverseConfig` the HTTP stack needs."""

    @property
    def allow_private_addresses(self) -> bool: ...
    @property
    def ca_bundle(self) -> Path | None: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def request_timeout(self) -> float: ...
    @property
    def max_response_bytes(self) -> int: ...
    @property
    def user_agent(self) -> str: ...


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why the bot must not connect to `ip` (a short phrase), or None when it is a public unicast address."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            if ip in _IPV4_COMPATIBLE:
                return "a deprecated IPv4-compatible address"
            return address_problem(embedded)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private or reserved address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved or non-public address"
    return None


class AddressGuard:
    """Resolves a host and returns only addresses the policy allows; refuses if any address is forbidden.

    Without a `resolver` it makes its own `SystemResolver`, and `close` stops that one's threads.
    """

    def __init__(self, resolver: Resolver | None = None, *, allow_private_addresses: bool = False) -> None:
        self._owned: SystemResolver | None = None
        if resolver is None:
            resolver = self._owned = SystemResolver()
        self._resolver: Resolver = resolver
        self._allow_private = allow_private_addresses

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    async def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = await self._resolver.resolve(host, port)
            except LookupsBusyError:
                raise
            except DnsError as exc:  # one wording, whichever resolver is in use
                raise DnsError(
                    f"The name {display_host(host)} could not be found (DNS lookup failed)."
                ) from exc
        if not addresses:
            raise DnsError(f"The name {display_host(host)} has no addresses.")
        if not self._allow_private:
            for ip in addresses:
                problem = address_problem(ip)
                if problem is not None:
                    raise ForbiddenAddressError(
                        f"{display_host(host)} points to {problem}; the bot only connects to public servers."
                    )
        return addresses

    async def open_socket(self, host: str, port: int, *, connect_timeout: float) -> socket.socket:
        """A connected non-blocking TCP socket to a checked address of host (for the websocket client).

        `connect_timeout` bounds the name lookup as well as each connect."""
        try:
            async with asyncio.timeout(connect_timeout):
                addresses = await self.checked_addresses(host, port)
        except TimeoutError:
            raise InstanceTimeoutError(
                f"Could not connect to {display_host(host)} within {connect_timeout:g} seconds."
            ) from None
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for ip in addresses:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(connect_timeout):
                    await loop.sock_connect(sock, (str(ip), port))
            except TimeoutError:
                sock.close()
                raise InstanceTimeoutError(
                    f"Could not connect to {display_host(host)} within {connect_timeout:g} seconds."
                ) from None
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise InstanceUnreachableError(
            f"Could not connect to {display_host(host)} (the connection was refused or failed)."
        ) from last_error


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the guard has checked."""

    def __init__(self, guard: AddressGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._guard = guard
        self._inner: httpcore.AsyncNetworkBackend = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._guard.checked_addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        last_error: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:  # try the next address; timeouts are final
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ForbiddenAddressError("Unix sockets are not used for fediverse instances.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def make_ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """TLS with certificate and host name verification always on; optionally a custom CA bundle."""
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle is not None else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# httpcore's errors and the httpx errors they become, most specific first (the same pairs httpx uses).
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Re-raise an httpcore error as its httpx counterpart; anything else (the guard's own errors) as is."""
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _HTTPX_ERRORS:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore connection pool whose every connection goes through the guard.

    HTTP/1.1 only, no proxies, no Unix sockets; TLS with `ssl_context` (verified against the URL's host name).
    """

    def __init__(
        self,
        guard: AddressGuard,
        ssl_context: ssl.SSLContext,
        limits: httpx.Limits,
        *,
        inner_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._guard = guard
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(guard, inner_backend),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("GuardedTransport serves httpx.AsyncClient only")
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            core_response = await self._pool.handle_async_request(core_request)
        if not isinstance(core_response.stream, AsyncIterable):  # pragma: no cover (an async pool's is)
            raise TypeError("httpcore returned a synchronous body from an async pool")
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response.stream),
            extensions=core_response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
        self._guard.close()


def build_http_client(
    settings: HttpSettings,
    resolver: Resolver | None = None,
    *,
    inner_backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """The httpx client for talking to instances: guarded connects, verified TLS, no redirects, no proxies.

    `inner_backend` is for tests that must prove where a connection would have gone.
    """
    guard = AddressGuard(resolver, allow_private_addresses=settings.allow_private_addresses)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
    ssl_context = make_ssl_context(settings.ca_bundle)
    transport = GuardedTransport(guard, ssl_context, limits, inner_backend=inner_backend)
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.request_timeout,
        write=settings.request_timeout,
        pool=settings.request_timeout,
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        # One client serves every user: never keep cookies an instance sets, so nothing leaks between users.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={"User-Agent": settings.user_agent, "Accept": "application/json"},
    )
