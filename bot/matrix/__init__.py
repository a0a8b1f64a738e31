"""The Matrix side of gts-bot: one adapter over matrix-nio; nio types never leave this package.

Public surface: `MatrixAdapter` + `Credentials` (adapter.py, session.py), the typed events and ids
(types.py), and the error tree (errors.py). `dm` holds the pure direct-chat and power-level rules.
"""

from bot.matrix.adapter import MatrixAdapter
from bot.matrix.errors import (
    MatrixError,
    MatrixForbidden,
    MatrixLoginError,
    MatrixNotFound,
    MatrixRateLimited,
    MatrixRequestError,
    MatrixStoreError,
    MatrixTooLarge,
    MatrixUnknownToken,
)
from bot.matrix.session import Credentials
from bot.matrix.types import (
    BotEvent,
    DeviceId,
    EventHandler,
    EventId,
    IncomingMessage,
    Invite,
    MemberLeft,
    RateLimitState,
    RoomId,
    SessionStore,
    StoredSession,
    TrustPolicy,
    UndecryptableMessage,
    UserId,
)

__all__ = [
    "BotEvent",
    "Credentials",
    "DeviceId",
    "EventHandler",
    "EventId",
    "IncomingMessage",
    "Invite",
    "MatrixAdapter",
    "MatrixError",
    "MatrixForbidden",
    "MatrixLoginError",
    "MatrixNotFound",
    "MatrixRateLimited",
    "MatrixRequestError",
    "MatrixStoreError",
    "MatrixTooLarge",
    "MatrixUnknownToken",
    "MemberLeft",
    "RateLimitState",
    "RoomId",
    "SessionStore",
    "StoredSession",
    "TrustPolicy",
    "UndecryptableMessage",
    "UserId",
]
