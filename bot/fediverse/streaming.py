"""Live notifications over the streaming websocket (`/api/v1/streaming?stream=user:notification`).

The TCP connection goes through the address guard (we open the socket to a checked IP ourselves and hand it to
websockets with the host name for TLS). The token travels in the `Authorization` header, never in the URL,
so it cannot land in a server's access log. GoToSocial checks the token only at connect time and keeps
delivering after a revoke, so whoever revokes a token must close its stream (`aclose`).

Reconnecting with backoff is the caller's job; this module gives one connection and ends it cleanly.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from types import TracebackType

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bot.errors import (
    BadResponseError,
    FediverseError,
    InstanceTimeoutError,
    InstanceUnreachableError,
    InsufficientScopeError,
    RateLimitedError,
    TlsError,
    TokenRejectedError,
    UnexpectedRedirectError,
)
from bot.fediverse.guard import AddressGuard, HttpSettings, Resolver, make_ssl_context
from bot.fediverse.instance import InstanceRef
from bot.fediverse.models import Notification, ShapeError, parse_notification

__all__ = [
    "NotificationStream",
    "StreamConnector",
    "build_stream_connector",
    "parse_stream_frame",
    "stream_notifications",
]

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/streaming"


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs request headers (our bearer token) and frames at DEBUG; never let it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        return None


MAX_FRAME_BYTES = 256 * 1024
"""A larger streaming frame closes the connection (websockets answers 1009); the relay reconnects and
fetches over REST whatever it carried. A real notification frame is a few kilobytes."""
MAX_QUEUED_FRAMES = 2
"""Frames websockets reads ahead while the relay's buffer is full: per account at most
(MAX_QUEUED_FRAMES + 1) x MAX_FRAME_BYTES wait in memory, then TCP pushes back on the instance."""
MAX_FRAME_CONTAINERS = 4_096
"""JSON objects and arrays a frame may open (counted before parsing, payload included): a frame of
`[[],[],...]` would otherwise cost ~20 bytes of memory per byte of text while it is parsed."""


def parse_stream_frame(message: str | bytes) -> Notification | None:
    """A streaming frame → the Notification it carries, or None for other events. ShapeError if malformed."""
    if isinstance(message, bytes):
        containers = message.count(b"[") + message.count(b"{")
    else:
        containers = message.count("[") + message.count("{")
    if containers > MAX_FRAME_CONTAINERS:
        raise ShapeError("frame has too many JSON objects or arrays")
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError):
        raise ShapeError("frame is not JSON") from None
    if not isinstance(frame, dict):
        raise ShapeError("frame is not a JSON object")
    if frame.get("event") != "notification":
        return None
    payload = frame.get("payload")
    if not isinstance(payload, str):
        raise ShapeError("frame.payload is not a string")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise ShapeError("frame.payload is not JSON") from None
    return parse_notification(data)


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
    ) -> None:
        self.guard = guard
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_bytes = max_message_bytes
        self.user_agent = user_agent

    def stream(
        self, instance: InstanceRef, token: str, *, stream: str = "user:notification"
    ) -> NotificationStream:
        return NotificationStream(self, instance, token, stream=stream)


def build_stream_connector(
    settings: HttpSettings,
    resolver: Resolver | None = None,
    *,
    ping_interval: float = 30.0,
    ping_timeout: float = 20.0,
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
    ) -> None:
        self._connector = connector
        self._instance = instance
        self._token = token
        self._stream = stream
        self._ws: ClientConnection | None = None
        self._closing = False

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
        c, instance = self._connector, self._instance
        name = instance.display
        secure = instance.scheme == "https"
        url = f"{'wss' if secure else 'ws'}://{instance.netloc}{STREAM_PATH}?stream={self._stream}"
        sock = await c.guard.open_socket(
            instance.host, instance.effective_port, connect_timeout=c.connect_timeout
        )
        tls: dict[str, object] = {"ssl": c.ssl_context, "server_hostname": instance.host} if secure else {}
        try:
            self._ws = await connect(
                url,
                sock=sock,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=c.user_agent,
                proxy=None,
                open_timeout=c.open_timeout,
                ping_interval=c.ping_interval,
                ping_timeout=c.ping_timeout,
                close_timeout=5.0,
                max_size=min(c.max_message_bytes, MAX_FRAME_BYTES),
                max_queue=MAX_QUEUED_FRAMES,
                compression=None,  # frames are small; inflating costs memory per connection
                logger=_QuietLogger(logging.getLogger("websockets.client"), {}),
                **tls,  # type: ignore[arg-type]
            )
        except websockets.InvalidStatus as exc:
            sock.close()
            raise _handshake_error(instance, exc.response.status_code, exc.response.headers) from None
        except TimeoutError:
            sock.close()
            raise InstanceTimeoutError(f"{name} did not open the notification stream in time.") from None
        except ssl.SSLError as exc:
            sock.close()
            raise TlsError(f"A secure (TLS) connection to {name} could not be established.") from exc
        except (websockets.InvalidHandshake, ValueError) as exc:
            sock.close()
            raise BadResponseError(f"{name} did not open a valid notification stream.") from exc
        except OSError as exc:
            sock.close()
            raise InstanceUnreachableError(f"The connection to {name} failed.") from exc

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
        malformed = 0  # the instance decides how many: log the first only, not a line per frame
        try:
            async for message in self._ws:
                try:
                    notification = parse_stream_frame(message)
                except ShapeError as exc:
                    malformed += 1
                    if malformed == 1:
                        log.warning("ignoring malformed streaming frames from %s: %s", name, exc)
                    continue
                if notification is not None:
                    yield notification
        except websockets.ConnectionClosed as exc:
            if self._closing:
                return
            raise InstanceUnreachableError(f"The notification stream from {name} was lost.") from exc
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
    if status == 401:
        return TokenRejectedError(
            f"{name} rejected the bot's access token: it was revoked, or the account was disabled or deleted."
        )
    if status == 403:
        return InsufficientScopeError(
            f"{name} refused the notification stream: it needs the full `read` permission (scope)."
        )
    if status in (301, 302, 303, 307, 308):
        return UnexpectedRedirectError(f"{name} redirected the notification stream elsewhere; not followed.")
    if status == 429:
        retry = headers.get("Retry-After", "")
        return RateLimitedError(
            f"{name} is limiting how often the bot may connect.",
            retry_after=float(retry) if retry.isdigit() else 60.0,
        )
    if status in (502, 503, 504):
        return InstanceUnreachableError(f"{name} is not available right now (HTTP {status}).")
    return BadResponseError(f"{name} refused the notification stream (HTTP {status}).")
