"""Typed values the Matrix adapter hands out and takes in. No nio types appear here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import NewType, Protocol

UserId = NewType("UserId", str)
RoomId = NewType("RoomId", str)
EventId = NewType("EventId", str)
DeviceId = NewType("DeviceId", str)


class TrustPolicy(Enum):
    """How the bot decides which devices of other users receive its room keys. See `bot.matrix.trust`."""

    TOFU = "tofu"
    ALL = "all"


@dataclass(frozen=True)
class StoredSession:
    """A login the bot made earlier. `sync_token` is None until the first sync finished."""

    user_id: UserId
    device_id: DeviceId
    access_token: str = field(repr=False)
    sync_token: str | None = None


class SessionStore(Protocol):
    """Where the adapter keeps its login and sync position (backed by the matrix_session table)."""

    async def load(self) -> StoredSession | None: ...

    async def save(self, user_id: UserId, device_id: DeviceId, access_token: str) -> None:
        """Record a new login. Implementations must forget any sync token of an older device."""
        ...

    async def save_sync_token(self, token: str) -> None: ...


# ---- events handed to the sync handler ----


@dataclass(frozen=True)
class IncomingMessage:
    """An m.room.message from someone else (decrypted if it was encrypted)."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    body: str
    formatted_body: str | None
    msgtype: str
    is_encrypted: bool
    server_ts: int
    reply_to: EventId | None = None  # a Matrix reply (m.in_reply_to) to this event


@dataclass(frozen=True)
class Reaction:
    """An m.reaction annotation from someone else (decrypted if it was encrypted)."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    relates_to: EventId
    key: str


@dataclass(frozen=True)
class Redaction:
    """Someone else removed an event (e.g. took back a reaction)."""

    room_id: RoomId
    event_id: EventId
    sender: UserId
    redacts: EventId


@dataclass(frozen=True)
class UndecryptableMessage:
    """An encrypted event the bot could not decrypt.

    `reason` is "missing_room_key" (the sender's device never shared the key with the bot's device) or
    "decryption_failed" (the key is there but decryption failed: replay, mismatched keys, bad payload).
    """

    room_id: RoomId
    event_id: EventId
    sender: UserId
    reason: str
    server_ts: int


@dataclass(frozen=True)
class Invite:
    """The bot was invited into a room. `is_direct` comes from the invite's member event."""

    room_id: RoomId
    inviter: UserId | None
    is_direct: bool


@dataclass(frozen=True)
class MemberLeft:
    """Someone (possibly the bot itself) left, was kicked from, or was banned from a room."""

    room_id: RoomId
    user_id: UserId


@dataclass(frozen=True)
class RoomChanged:
    """A change that can make a private room less private: someone other than the bot joined or was
    invited, or the join rules or history visibility changed. Whoever relies on the room being a 1:1
    DM must look at it again."""

    room_id: RoomId
    sender: UserId


BotEvent = (
    IncomingMessage | Reaction | Redaction | UndecryptableMessage | Invite | MemberLeft | RoomChanged
)
EventHandler = Callable[[BotEvent], Awaitable[None]]


@dataclass(frozen=True)
class RateLimitState:
    """Published whenever the homeserver starts or stops rate-limiting the bot's sends.

    `blocked` is True from the first 429 until a send goes through again; `retry_after_ms` is the
    server's hint (None when it gave none) and `queued` how many sends are waiting behind the blocked one.
    """

    blocked: bool
    retry_after_ms: int | None
    queued: int


@dataclass(frozen=True)
class OutgoingNotice:
    """A relayed m.notice, composed at the moment the homeserver's limiter lets it go.

    `covers` names the notifications it carries; the homeserver never sees it (observers such as the
    relay benchmark match messages to notifications with it).
    """

    room_id: RoomId
    body: str
    html: str
    txn_id: str
    covers: tuple[str, ...] = ()
