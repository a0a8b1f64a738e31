"""Helpers shared by the fediverse client tests: a stub resolver, settings, loopback servers, TLS material."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.config import FediverseConfig
from bot.errors import DnsError
from bot.fediverse.client import FediverseClient
from bot.fediverse.guard import IPAddress, build_http_client
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.ratelimit import PacerRegistry


class StubResolver:
    """Maps names to addresses. A list of lists gives one answer per call (the last one repeats)."""

    def __init__(self, answers: dict[str, list[str] | list[list[str]]]) -> None:
        self._answers = answers
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))
        answer = self._answers.get(host)
        if answer is None:
            raise DnsError(f"The name {host} could not be found (DNS lookup failed).")
        if answer and isinstance(answer[0], list):
            rounds = [a for a in answer if isinstance(a, list)]
            current = rounds[min(len(self.calls_for(host)) - 1, len(rounds) - 1)]
        else:
            current = [a for a in answer if isinstance(a, str)]
        return [ipaddress.ip_address(a) for a in current]

    def calls_for(self, host: str) -> list[tuple[str, int]]:
        return [c for c in self.calls if c[0] == host]


def settings(**overrides: object) -> FediverseConfig:
    """Settings for loopback tests: http and private addresses allowed unless overridden."""
    values: dict[str, object] = {
        "allow_http": True,
        "allow_private_addresses": True,
        "connect_timeout": 2.0,
        "request_timeout": 3.0,
        "max_response_bytes": 64 * 1024,
    }
    values.update(overrides)
    return FediverseConfig(**values)  # type: ignore[arg-type]


@dataclass
class ConnectionCounter:
    """A raw TCP server on loopback that counts connections and answers a minimal HTTP 200."""

    port: int = 0
    connections: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def connection_counter(host: str = "127.0.0.1") -> AsyncIterator[ConnectionCounter]:
    counter = ConnectionCounter()
    server = await asyncio.start_server(counter._handle, host, 0)
    counter.server = server
    counter.port = server.sockets[0].getsockname()[1]
    try:
        yield counter
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def serve(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Run an aiohttp app on 127.0.0.1 with a free port; yields the port."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(directory: Path, names: list[str]) -> TlsFiles:
    """A throwaway CA and a server certificate for `names`, signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gts-bot test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@asynccontextmanager
async def fedi_client(
    resolver: StubResolver | None = None, pacers: PacerRegistry | None = None, **overrides: object
) -> AsyncIterator[FediverseClient]:
    """A FediverseClient over the guarded transport, with loopback-friendly settings."""
    cfg = settings(**overrides)
    async with build_http_client(cfg, resolver) as http:
        yield FediverseClient.from_settings(http, cfg, pacers=pacers)


def loopback(port: int) -> InstanceRef:
    return parse_instance(f"http://127.0.0.1:{port}", allow_http=True)


class FakeSleep:
    """An injectable sleep that records and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
