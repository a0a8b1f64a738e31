"""Live notifications over the streaming websocket (`/api/v1/streaming?stream=user:notification`).

Where: the streaming base URL the instance advertises (`stream_endpoint`), else the instance itself; a 301
from there to a streaming host is followed once. Every connection, the redirected one too, goes through
the address guard (we open the socket to a checked IP ourselves and hand it to websockets with the host
name for TLS). A token is never sent in plain text to a host when the instance itself uses https.

The token travels in the `Sec-WebSocket-Protocol` header (the server echoes it back): GoToSocial, Mastodon,
Akkoma/Pleroma and Iceshrimp.NET all read it there, Akkoma and Iceshrimp.NET ignore `Authorization`, and it
never lands in a URL or an access log. A token that is not a valid header token goes in `Authorization`.

Every handshake counts in the instance's rate-limit budget (GoToSocial counts streaming connects in its
one client-API budget per IP, reference §9), so when the connector has the process's pacers, a handshake
waits on the same pacer as the instance's REST calls and its answer's headers feed that pacer. A server
paced by buckets (Mastodon) streams from a server that rack-attack does not count, so it is not paced.

Refusals: a 400/401/403 handshake and an in-stream `{"error": …, "status": …}` frame raise
`StreamRefusedError`; whether the token is really dead is for a REST call to say (the caller's job).
GoToSocial checks the token only at connect time and keeps delivering after a revoke, so whoever revokes a
token must close its stream (`aclose`); Mastodon and Akkoma close it themselves.

What the stream reads is bounded (`stream_frames`: bytes and JSON containers per frame; `ws_connection`:
frames per second, pings and fragments included). A frame that is not a well-formed text frame (invalid
UTF-8, binary, not JSON, a `notification` event whose payload does not parse) ends the stream: it may have
carried a notification, and the relay must not move its cursor past it on the strength of the next one,
so it reconnects and catches up over REST from where it was. Events other than `notification` are
skipped. Errors name the instance, never what it sent (close reasons included).

Reconnecting with backoff is the caller's job; this module gives one connection and ends it cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bot.errors import (
    BadResponseError,
    FediverseError,
    InstanceTimeoutError,
    InstanceUnreachableError,
    InvalidInstanceError,
    RateLimitedError,
    StreamRefusedError,
    TlsError,
    UnexpectedRedirectError,
)
from bot.fediverse._http import rate_limited_error
from bot.fediverse.guard import AddressGuard, HttpSettings, Resolver, make_ssl_context
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.models import Notification, ShapeError
from bot.fediverse.ratelimit import BucketKind, InstancePacer, PacerRegistry, PacingModel, WaitTooLong
from bot.fediverse.stream_frames import (
    MAX_FRAME_BYTES,
    FrameBudget,
    StreamErrorFrame,
    parse_stream_frame,
)
from bot.fediverse.ws_connection import BudgetedConnection, budgeted_connection

__all__ = [
    "NotificationStream",
    "StreamConnector",
    "StreamEndpoints",
    "StreamErrorFrame",
    "build_stream_connector",
    "parse_stream_frame",
    "stream_endpoint",
    "stream_notifications",
]

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/streaming"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REFUSALS = frozenset({400, 401, 403})
_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,1024}$")  # RFC 9110 `token`
_WS_SCHEMES = {"wss": "https", "https": "https", "ws": "http", "http": "http"}


def stream_endpoint(instance: InstanceRef, advertised: str | None) -> InstanceRef:
    """Where to open the stream, given the advertised streaming base URL (or a 301's Location).

    Unusable or absent → the instance itself. On the instance's own host the instance's scheme wins
    (GoToSocial advertises `wss://` even when served over plain http); an explicit port is kept. Another
    host keeps its scheme, except that an https instance never gets a plain-text stream. The host must
    pass the same input rules as an instance address; the address guard checks it at connect time.
    """
    if not advertised:
        return instance
    try:
        parts = urllib.parse.urlsplit(advertised)
        scheme = _WS_SCHEMES.get(parts.scheme.lower())
        if scheme is None or not parts.netloc:
            return instance
        ref = parse_instance(f"{scheme}://{parts.netloc}", allow_http=True)
    except (ValueError, InvalidInstanceError):
        return instance
    if ref.host == instance.host:
        port = ref.port if ref.port is not None else instance.port
        return InstanceRef(instance.scheme, instance.host, None if port == _default_port(instance) else port)
    if instance.scheme == "https" and ref.scheme == "http":
        return InstanceRef("https", ref.host, ref.port)
    return ref


def _default_port(instance: InstanceRef) -> int:
    return 443 if instance.scheme == "https" else 80


class StreamEndpoints:
    """Where each instance streams, learnt once per process and shared by all its accounts (so a restart
    with many accounts on one instance asks it once). A redirect followed by any stream updates it."""

    def __init__(self) -> None:
        self._known: dict[str, InstanceRef] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, instance: InstanceRef, learn: Callable[[], Awaitable[InstanceRef]]) -> InstanceRef:
        known = self._known.get(instance.key)
        if known is not None:
            return known
        async with self._locks.setdefault(instance.key, asyncio.Lock()):
            if instance.key not in self._known:
                self._known[instance.key] = await learn()
        return self._known[instance.key]

    def remember(self, instance: InstanceRef, endpoint: InstanceRef) -> None:
        self._known[instance.key] = endpoint


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs request headers (our bearer token) and frames at DEBUG; never let it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        return None


MAX_QUEUED_FRAMES = 1
"""Frames websockets reads ahead while the relay's buffer is full: it stops reading the socket once more
than this many are queued, so per account at most (MAX_QUEUED_FRAMES + 1) x MAX_FRAME_BYTES wait in
memory (plus one socket read, 256 KiB), then TCP pushes back on the instance."""


class StreamConnector:
    """What every stream needs: the address guard, TLS settings and timeouts. Build one per process."""

    def __init__(
        self,
        guard: AddressGuard,
        ssl_context: ssl.SSLContext,
        *,
        connect_timeout: float = 5.0,
        open_timeout: float = 15.0,
        ping_interval: float = 30.0,
        ping_timeout: float = 20.0,
        max_message_bytes: int = 1_048_576,
        user_agent: str = "gts-bot",
        pacers: PacerRegistry | None = None,
        frame_rate: float = 200.0,
        frame_burst: int = 2_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`pacers`: the registry the REST client paces with (one per process), so handshakes share the
        instance's budget with REST calls; None leaves handshakes unpaced. `frame_rate`/`frame_burst`: the
        frames a connection may receive (see `FrameBudget`), measured with `clock`."""
        self.guard = guard
        self.pacers = pacers
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_bytes = max_message_bytes
        self.user_agent = user_agent
        self.endpoints = StreamEndpoints()
        self.frame_rate = frame_rate
        self.frame_burst = frame_burst
        self.clock = clock

    def frame_budget(self) -> FrameBudget:
        return FrameBudget(rate=self.frame_rate, burst=self.frame_burst, clock=self.clock)

    def stream(
        self,
        instance: InstanceRef,
        token: str,
        *,
        stream: str = "user:notification",
        endpoint: InstanceRef | None = None,
    ) -> NotificationStream:
        """`endpoint`: where to dial (see `stream_endpoint`); the instance itself when not given."""
        return NotificationStream(self, instance, token, stream=stream, endpoint=endpoint)


def build_stream_connector(
    settings: HttpSettings,
    resolver: Resolver | None = None,
    *,
    ping_interval: float = 30.0,
    ping_timeout: float = 20.0,
    pacers: PacerRegistry | None = None,
) -> StreamConnector:
    return StreamConnector(
        AddressGuard(resolver, allow_private_addresses=settings.allow_private_addresses),
        make_ssl_context(settings.ca_bundle),
        connect_timeout=settings.connect_timeout,
        open_timeout=settings.request_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_message_bytes=settings.max_response_bytes,
        user_agent=settings.user_agent,
        pacers=pacers,
    )


class NotificationStream:
    """One websocket connection. Use `async with connector.stream(instance, token) as s: async for n in s`.

    Iteration ends quietly after `aclose()`; any other end of the connection raises a FediverseError
    (usually InstanceUnreachableError) so the caller knows to reconnect or fall back to polling.
    """

    def __init__(
        self,
        connector: StreamConnector,
        instance: InstanceRef,
        token: str,
        *,
        stream: str = "user:notification",
        endpoint: InstanceRef | None = None,
    ) -> None:
        self._connector = connector
        self._instance = instance
        self._token = token
        self._stream = stream
        self._ws: ClientConnection | None = None
        self._closing = False
        self.endpoint = endpoint or instance  # after connect(): where the stream really is (301 followed)

    def __repr__(self) -> str:
        return f"NotificationStream({self._instance.display!r}, stream={self._stream!r})"

    async def __aenter__(self) -> NotificationStream:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closing

    async def connect(self) -> None:
        """Open the stream at `endpoint`, following one redirect to a streaming host."""
        endpoint = self.endpoint
        for hop in range(2):
            location = await self._open(endpoint)
            if location is None:
                self.endpoint = endpoint
                return
            target = stream_endpoint(self._instance, urllib.parse.urljoin(endpoint.base_url, location))
            if hop or target == endpoint:
                break
            endpoint = target
        raise UnexpectedRedirectError(
            f"{self._instance.display} redirected the notification stream more than once; not followed."
        )

    async def _open(self, endpoint: InstanceRef) -> str | None:
        """One handshake at `endpoint`. Returns the Location of a redirect, or None when connected."""
        c, name = self._connector, self._instance.display
        pacer = self._pacer()
        if pacer is not None:
            try:
                await pacer.acquire()
            except WaitTooLong as exc:
                raise rate_limited_error(self._instance, exc.delay) from None
        secure = endpoint.scheme == "https"
        url = f"{'wss' if secure else 'ws'}://{endpoint.netloc}{STREAM_PATH}?stream={self._stream}"
        sock = await c.guard.open_socket(
            endpoint.host, endpoint.effective_port, connect_timeout=c.connect_timeout
        )
        tls: dict[str, object] = {"ssl": c.ssl_context, "server_hostname": endpoint.host} if secure else {}
        if _HEADER_TOKEN.match(self._token):
            auth: dict[str, object] = {"subprotocols": [Subprotocol(self._token)]}
        else:
            auth = {"additional_headers": {"Authorization": f"Bearer {self._token}"}}
        try:
            self._ws = await connect(
                url,
                sock=sock,
                user_agent_header=c.user_agent,
                proxy=None,
                open_timeout=c.open_timeout,
                ping_interval=c.ping_interval,
                ping_timeout=c.ping_timeout,
                close_timeout=5.0,
                max_size=min(c.max_message_bytes, MAX_FRAME_BYTES),
                max_queue=MAX_QUEUED_FRAMES,
                compression=None,  # frames are small; inflating costs memory per connection
                create_connection=budgeted_connection(c.frame_budget),  # type: ignore[arg-type]
                logger=_QuietLogger(logging.getLogger("websockets.client"), {}),
                **auth,  # type: ignore[arg-type]
                **tls,  # type: ignore[arg-type]
            )
        except (websockets.InvalidStatus, ValueError) as exc:
            # websockets wraps a redirect it cannot follow on our pre-opened socket in a ValueError
            status_exc = exc if isinstance(exc, websockets.InvalidStatus) else exc.__cause__
            if not isinstance(status_exc, websockets.InvalidStatus):
                sock.close()
                raise BadResponseError(f"{name} did not open a valid notification stream.") from exc
            sock.close()
            status, headers = status_exc.response.status_code, status_exc.response.headers
            if pacer is not None and status == 429:
                raise rate_limited_error(self._instance, pacer.rate_limited(headers)) from None
            self._observe(pacer, headers)
            if status in _REDIRECTS and headers.get("Location"):
                return str(headers["Location"])
            raise _handshake_error(self._instance, status, headers) from None
        except TimeoutError:
            sock.close()
            raise InstanceTimeoutError(f"{name} did not open the notification stream in time.") from None
        except ssl.SSLError as exc:
            sock.close()
            raise TlsError(f"A secure (TLS) connection to {name} could not be established.") from exc
        except websockets.InvalidHandshake as exc:
            sock.close()
            raise BadResponseError(f"{name} did not open a valid notification stream.") from exc
        except OSError as exc:
            sock.close()
            raise InstanceUnreachableError(f"The connection to {name} failed.") from exc
        self._observe(pacer, self._ws.response.headers if self._ws.response is not None else None)
        return None

    def _pacer(self) -> InstancePacer | None:
        """The pacer of the budget this handshake counts in (see the module docstring), if any."""
        pacers, key = self._connector.pacers, self._instance.key
        if pacers is None or pacers.model(key) is not PacingModel.SHARED:
            return None
        return pacers.get(pacers.bucket(key, BucketKind.TOKEN, self._token))

    def _observe(self, pacer: InstancePacer | None, headers: Mapping[str, str] | None) -> None:
        pacers = self._connector.pacers
        if pacers is None or headers is None:
            return
        pacers.learn_from_headers(self._instance.key, headers)
        if pacer is not None:
            pacer.observe(headers)

    async def aclose(self) -> None:
        """Close the connection now (e.g. the token was just revoked). Safe to call more than once."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    def __aiter__(self) -> AsyncIterator[Notification]:
        return self._notifications()

    async def _notifications(self) -> AsyncIterator[Notification]:
        if self._ws is None:
            raise RuntimeError("NotificationStream.connect() was not called")
        name = self._instance.display
        try:
            async for message in self._ws:
                try:
                    if isinstance(message, bytes):
                        raise ShapeError("a binary frame")
                    notification = parse_stream_frame(message)
                except ShapeError as exc:
                    # the ShapeError names a field, never a value the instance sent
                    log.warning("%s sent a malformed streaming frame (%s); catching up over REST", name, exc)
                    raise BadResponseError(
                        f"{name} sent a malformed streaming frame; the bot catches up over REST."
                    ) from None
                if isinstance(notification, StreamErrorFrame):
                    status = notification.status
                    raise StreamRefusedError(
                        f"{name} refused the notification stream (an error frame, status {status}).",
                        status=status,
                        in_stream=True,
                    )
                # The frame text (up to MAX_FRAME_BYTES) must not stay alive while the consumer is
                # blocked on a full buffer: only the bounded notification is kept.
                del message
                if notification is not None:
                    yield notification
        except websockets.ConnectionClosed:
            overrun = self._ws.overrun if isinstance(self._ws, BudgetedConnection) else None
            if overrun == "frames":
                raise BadResponseError(
                    f"{name} sent streaming frames too fast (more than {self._connector.frame_rate:g} a "
                    "second); the connection was closed."
                ) from None
            if overrun == "unread":
                raise BadResponseError(
                    f"{name} stopped reading the notification stream's answers; the connection was closed."
                ) from None
            if self._closing:
                return
            # `from None`: the close reason is the instance's text, not ours to log
            raise InstanceUnreachableError(f"The notification stream from {name} was lost.") from None
        if not self._closing:
            raise InstanceUnreachableError(f"{name} closed the notification stream.")


def stream_notifications(
    connector: StreamConnector, instance: InstanceRef, token: str, *, stream: str = "user:notification"
) -> NotificationStream:
    """`async with stream_notifications(c, instance, token) as s: async for notification in s: ...`"""
    return NotificationStream(connector, instance, token, stream=stream)


def _handshake_error(
    instance: InstanceRef, status: int, headers: websockets.datastructures.Headers
) -> FediverseError:
    name = instance.display
    if status == 403:
        return StreamRefusedError(
            f"{name} refused the notification stream: the token may not read it (HTTP 403).", status=status
        )
    if status in _REFUSALS:
        return StreamRefusedError(f"{name} refused the notification stream (HTTP {status}).", status=status)
    if status in _REDIRECTS:
        return UnexpectedRedirectError(f"{name} redirected the notification stream without a Location.")
    if status == 429:
        retry = headers.get("Retry-After", "")
        return RateLimitedError(
            f"{name} is limiting how often the bot may connect.",
            retry_after=float(retry) if retry.isdigit() else 60.0,
        )
    if status in (502, 503, 504):
        return InstanceUnreachableError(f"{name} is not available right now (HTTP {status}).")
    return BadResponseError(f"{name} refused the notification stream (HTTP {status}).")
