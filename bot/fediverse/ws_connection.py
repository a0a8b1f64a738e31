"""The websockets client connection the notification stream uses: it counts every frame it receives.

websockets answers pings and assembles fragments below the messages the stream reads, so a server can
make a connection work without ever sending a message: a ping flood (each ping asks for a pong) or a flood
of ignored events would keep an account's connection busy for as long as the server likes. Every frame
(data, continuation, ping, pong, close) spends the connection's `FrameBudget`; once it is overdrawn the
connection is aborted and `overrun` is set, so the stream ends with a clear error and the relay reconnects
with backoff (and, if it keeps happening, polls).

A server that makes the connection write (pongs) but never reads is caught too: once more than
`MAX_UNSENT_BYTES` wait in the connection's write buffer the connection is aborted the same way (`overrun`
says which limit was hit). The bot itself writes only pings, pongs and a close frame, a few bytes a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.protocol import Event

from bot.fediverse.stream_frames import FrameBudget

__all__ = ["MAX_UNSENT_BYTES", "BudgetedConnection", "Overrun", "budgeted_connection"]

MAX_UNSENT_BYTES = 64 * 1024

Overrun = Literal["frames", "unread"]


class BudgetedConnection(ClientConnection):
    def __init__(self, protocol: ClientProtocol, *, budget: FrameBudget, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self._budget = budget
        self.overrun: Overrun | None = None  # set when a limit was hit and the connection aborted

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and not self._budget.spend() and self.overrun is None:
            self.overrun = "frames"
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.overrun is None and self.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            self.overrun = "unread"
        if self.overrun is not None and not self.transport.is_closing():
            self.transport.abort()  # no close handshake: it would be one more exchange with the flooder


def budgeted_connection(budget: Callable[[], FrameBudget]) -> Callable[..., BudgetedConnection]:
    """A `create_connection` factory for `websockets.asyncio.client.connect`, one budget per connection."""

    def create(protocol: ClientProtocol, **kwargs: Any) -> BudgetedConnection:
        return BudgetedConnection(protocol, budget=budget(), **kwargs)

    return create
