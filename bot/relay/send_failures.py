"""Pure: which homeserver send failures repeating the same send cannot fix."""

from __future__ import annotations

from bot.matrix.errors import MatrixRequestError

__all__ = ["is_permanent_send_failure", "is_room_refusal"]

_PERMANENT_ERRCODES = frozenset({"M_FORBIDDEN", "M_NOT_FOUND", "M_TOO_LARGE"})
_PERMANENT_STATUSES = frozenset({403, 404, 413})
_ROOM_ERRCODES = frozenset({"M_FORBIDDEN", "M_NOT_FOUND"})
_ROOM_STATUSES = frozenset({403, 404})


def is_permanent_send_failure(exc: BaseException) -> bool:
    """Forbidden, unknown room, or message too large: sending the same thing again fails again."""
    if not isinstance(exc, MatrixRequestError):
        return False
    if exc.errcode is not None:
        return exc.errcode in _PERMANENT_ERRCODES
    return exc.status in _PERMANENT_STATUSES


def is_room_refusal(exc: BaseException) -> bool:
    """The room refused the bot (kicked, left, or gone): another room may work, the same one will not."""
    if not isinstance(exc, MatrixRequestError):
        return False
    if exc.errcode is not None:
        return exc.errcode in _ROOM_ERRCODES
    return exc.status in _ROOM_STATUSES
