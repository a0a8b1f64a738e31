"""The address guard: policy, refusal before any connect, connecting to the checked IP, verified TLS."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from pathlib import Path

import httpcore
import httpx
import pytest
from aiohttp import web

from bot.errors import DnsError, ForbiddenAddressError, InstanceTimeoutError, TlsError
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import (
    AddressGuard,
    GuardedBackend,
    SystemResolver,
    address_problem,
    build_http_client,
)
from bot.fediverse.instance import parse_instance
from tests.integration.fedi_support import StubResolver, connection_counter, make_tls_files, serve, settings

FORBIDDEN = [
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.5",
    "::ffff:169.254.169.254",
    "169.254.169.254",
    "169.254.1.1",
    "fd00:ec2::254",
    "fd00::1",
    "fc00::1",
    "fe80::1",
    "fec0::1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "::",
    "255.255.255.255",
    "224.0.0.1",
    "224.0.1.1",  # multicast that Python calls "global"
    "ff02::1",
    "ff0e::1",
    "192.0.2.10",  # documentation
    "198.51.100.1",
    "203.0.113.9",
    "2001:db8::1",
    "198.18.0.1",  # benchmarking
    "240.0.0.1",  # reserved
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "2002:a00:5::1",  # 6to4 wrapping 10.0.0.5
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
    "::7f00:1",  # IPv4-compatible (deprecated)
    "::8.8.8.8",
]
ALLOWED = ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "1.1.1.1"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_policy_refuses(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_policy_allows_public_unicast(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_metadata_is_named() -> None:
    assert address_problem(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    assert address_problem(ipaddress.ip_address("fd00:ec2::254")) == "a cloud metadata address"


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where it was asked to connect and never connects."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        raise httpcore.ConnectError("recording backend: not connecting")

    async def sleep(self, seconds: float) -> None:
        return None


@pytest.mark.parametrize(
    "address",
    ["10.0.0.5", "127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fd00::1", "100.64.0.1"],
)
async def test_http_client_refuses_before_any_connect(address: str) -> None:
    resolver = StubResolver({"evil.example": [address]})
    recorder = RecordingBackend()
    http = build_http_client(settings(allow_private_addresses=False), resolver, inner_backend=recorder)
    async with http:
        with pytest.raises(ForbiddenAddressError, match=r"evil\.example points to"):
            await http.get("https://evil.example/api/v1/instance")
    assert resolver.calls == [("evil.example", 443)]
    assert recorder.connects == []


async def test_ip_literal_is_checked_without_dns() -> None:
    resolver = StubResolver({})
    recorder = RecordingBackend()
    http = build_http_client(settings(allow_private_addresses=False), resolver, inner_backend=recorder)
    async with http:
        for url in ("http://127.0.0.1:8080/", "http://[::ffff:7f00:1]/", "https://[fd00:ec2::254]/"):
            with pytest.raises(ForbiddenAddressError):
                await http.get(url)
    assert resolver.calls == []
    assert recorder.connects == []


async def test_one_private_address_among_public_ones_refuses_the_host() -> None:
    guard = AddressGuard(StubResolver({"mixed.example": ["8.8.8.8", "10.1.2.3"]}))
    with pytest.raises(ForbiddenAddressError, match="private"):
        await guard.checked_addresses("mixed.example", 443)


async def test_connect_goes_to_the_checked_ip_even_if_dns_changes() -> None:
    """Rebinding: the name is public at the check, private afterwards. The connection goes to the IP that
    was checked, and the next connection (which sees the private answer) is refused."""
    resolver = StubResolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    recorder = RecordingBackend()
    backend = GuardedBackend(AddressGuard(resolver), recorder)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("rebind.example", 443)
    assert recorder.connects == [("93.184.216.34", 443)]
    with pytest.raises(ForbiddenAddressError):
        await backend.connect_tcp("rebind.example", 443)
    assert recorder.connects == [("93.184.216.34", 443)]
    assert len(resolver.calls) == 2


async def test_tries_each_checked_address_in_turn() -> None:
    resolver = StubResolver({"multi.example": ["2606:4700::1111", "1.1.1.1"]})
    recorder = RecordingBackend()
    backend = GuardedBackend(AddressGuard(resolver), recorder)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("multi.example", 8443)
    assert recorder.connects == [("2606:4700::1111", 8443), ("1.1.1.1", 8443)]


async def test_the_transport_connects_to_the_checked_ip_and_raises_httpx_errors() -> None:
    resolver = StubResolver({"pub.example": ["93.184.216.34"]})
    recorder = RecordingBackend()
    async with build_http_client(settings(), resolver, inner_backend=recorder) as http:
        with pytest.raises(httpx.ConnectError) as raised:
            await http.get("https://pub.example/api/v1/instance")
    assert recorder.connects == [("93.184.216.34", 443)]
    assert isinstance(raised.value.__cause__, httpcore.ConnectError)
    assert raised.value.request.url.host == "pub.example"


async def test_a_body_cut_short_is_an_httpx_protocol_error() -> None:
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut_short, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, build_http_client(settings(), StubResolver({})) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_unix_sockets_are_refused() -> None:
    backend = GuardedBackend(AddressGuard(StubResolver({})), RecordingBackend())
    with pytest.raises(ForbiddenAddressError):
        await backend.connect_unix_socket("/var/run/docker.sock")


async def test_real_loopback_server_never_sees_a_refused_connection() -> None:
    async with connection_counter() as server:
        resolver = StubResolver({"evil.example": ["127.0.0.1"]})
        http = build_http_client(settings(allow_private_addresses=False), resolver)
        async with http:
            with pytest.raises(ForbiddenAddressError):
                await http.get(f"http://evil.example:{server.port}/")
            with pytest.raises(ForbiddenAddressError):
                await http.get(f"http://127.0.0.1:{server.port}/")
        guard = AddressGuard(resolver)
        with pytest.raises(ForbiddenAddressError):
            await guard.open_socket("evil.example", server.port, connect_timeout=30.0)
        assert server.connections == 0

        # The same server is reachable once private addresses are allowed: the refusal was the guard's.
        http = build_http_client(settings(allow_private_addresses=True), resolver)
        async with http:
            response = await http.get(f"http://evil.example:{server.port}/")
        assert response.status_code == 200
        sock = await AddressGuard(resolver, allow_private_addresses=True).open_socket(
            "evil.example", server.port, connect_timeout=30.0
        )
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert (await loop.sock_recv(sock, 1024)).startswith(b"HTTP/1.1 200")
        sock.close()
        assert server.connections == 2


async def test_dns_failure_is_a_dns_error() -> None:
    guard = AddressGuard(StubResolver({}))
    with pytest.raises(DnsError, match=r"nowhere\.example"):
        await guard.checked_addresses("nowhere.example", 443)


async def test_system_resolver_maps_failure_to_dns_error() -> None:
    resolver = SystemResolver()
    with pytest.raises(DnsError):
        await resolver.resolve("does-not-exist.invalid", 443)
    assert ipaddress.ip_address("127.0.0.1") in await resolver.resolve("localhost", 80)
    resolver.close()


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"uri": "gts.test", "version": "0.20.0", "title": "t"})


async def test_tls_verifies_the_host_name_while_connecting_to_the_checked_ip(tmp_path: Path) -> None:
    """The socket goes to 127.0.0.1, yet the certificate is checked against gts.test."""
    tls = make_tls_files(tmp_path, ["gts.test"])
    app = web.Application()
    app.router.add_get("/api/v1/instance", _hello)
    async with serve(app, ssl_context=tls.server_context()) as port:
        resolver = StubResolver({"gts.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        cfg = settings(ca_bundle=tls.ca, allow_http=False)
        http = build_http_client(cfg, resolver)
        async with http:
            client = FediverseClient.from_settings(http, cfg)
            ok = await client.probe(parse_instance(f"gts.test:{port}", allow_http=False))
            assert ok.uri == "gts.test"
            with pytest.raises(TlsError, match=r"other\.test"):  # certificate is not for this name
                await client.probe(parse_instance(f"other.test:{port}", allow_http=False))

        # Without the custom CA bundle the same server is not trusted.
        plain = settings(allow_http=False)
        http = build_http_client(plain, resolver)
        async with http:
            with pytest.raises(TlsError, match="not valid"):
                await FediverseClient.from_settings(http, plain).probe(
                    parse_instance(f"gts.test:{port}", allow_http=False)
                )


class SlowResolver:
    async def resolve(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")


async def test_slow_dns_counts_as_a_connect_timeout() -> None:
    cfg = settings(connect_timeout=0.2, allow_http=False)
    async with build_http_client(cfg, SlowResolver()) as http:
        client = FediverseClient.from_settings(http, cfg)
        with pytest.raises(
            InstanceTimeoutError, match=r"slow\.example did not accept a connection within 0\.2"
        ):
            await client.probe(parse_instance("slow.example", allow_http=False))


async def test_dns_failure_through_the_client_names_the_instance() -> None:
    cfg = settings(allow_http=False)
    async with build_http_client(cfg, StubResolver({})) as http:
        with pytest.raises(DnsError, match=r"bücher\.example"):
            await FediverseClient.from_settings(http, cfg).probe(
                parse_instance("bücher.example", allow_http=False)
            )


async def test_cookies_are_never_kept() -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({})
        response.set_cookie("session", "abc")
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    async with serve(app) as port, build_http_client(settings()) as http:
        await http.get(f"http://127.0.0.1:{port}/")
        await http.get(f"http://127.0.0.1:{port}/")
    assert seen == [None, None]
