"""Errors raised by the Matrix adapter. matrix-nio's `ErrorResponse` never leaves `bot.matrix`.

    GtsBotError
    └── MatrixError                        anything that went wrong talking to the homeserver
        ├── MatrixLoginError               no usable session: no password to log in again, or login refused
        ├── MatrixStoreError               the E2EE store does not match the stored session
        └── MatrixRequestError             the homeserver answered a request with an error (errcode, status)
            ├── MatrixRateLimited          429 M_LIMIT_EXCEEDED (retry_after_ms)
            ├── MatrixUnknownToken         401 M_UNKNOWN_TOKEN: the access token is no longer valid
            ├── MatrixForbidden            403 M_FORBIDDEN
            ├── MatrixNotFound             404 M_NOT_FOUND
            └── MatrixTooLarge             413 M_TOO_LARGE

`error_from_response` is the one place where Matrix error codes (or, without one, HTTP statuses) map to
classes; `is_permanent_send_failure` and `is_room_refusal` read meaning off those classes only.
Messages never contain the access token (nio's error messages come from the server, which does not
echo tokens).
"""

from __future__ import annotations

from bot.errors import GtsBotError


class MatrixError(GtsBotError):
    """Something went wrong talking to the Matrix homeserver."""


class MatrixLoginError(MatrixError):
    """The bot has no usable session and cannot get one."""


class MatrixStoreError(MatrixError):
    """The E2EE store is missing or belongs to another device than the stored session."""


class MatrixRequestError(MatrixError):
    """The homeserver answered with an error."""

    def __init__(self, message: str, errcode: str | None = None, status: int | None = None) -> None:
        super().__init__(f"{errcode or 'error'}: {message}" if errcode else message)
        self.errcode = errcode
        self.status = status


class MatrixRateLimited(MatrixRequestError):
    def __init__(self, message: str, retry_after_ms: int | None, status: int | None = 429) -> None:
        super().__init__(message, "M_LIMIT_EXCEEDED", status)
        self.retry_after_ms = retry_after_ms


class MatrixUnknownToken(MatrixRequestError):
    pass


class MatrixForbidden(MatrixRequestError):
    pass


class MatrixNotFound(MatrixRequestError):
    pass


class MatrixTooLarge(MatrixRequestError):
    pass


_BY_ERRCODE: dict[str, type[MatrixRequestError]] = {
    "M_UNKNOWN_TOKEN": MatrixUnknownToken,
    "M_MISSING_TOKEN": MatrixUnknownToken,
    "M_FORBIDDEN": MatrixForbidden,
    "M_NOT_FOUND": MatrixNotFound,
    "M_TOO_LARGE": MatrixTooLarge,
}
_BY_STATUS: dict[int, type[MatrixRequestError]] = {
    401: MatrixUnknownToken,
    403: MatrixForbidden,
    404: MatrixNotFound,
    413: MatrixTooLarge,
}


def error_from_response(
    message: str, errcode: str | None, status: int | None, retry_after_ms: int | None = None
) -> MatrixRequestError:
    """Map an error answer (errcode, HTTP status) to its exception class."""
    if errcode == "M_LIMIT_EXCEEDED" or status == 429:
        return MatrixRateLimited(message, retry_after_ms, status)
    if errcode:
        cls = _BY_ERRCODE.get(errcode, MatrixRequestError)
    else:
        cls = _BY_STATUS.get(status or 0, MatrixRequestError)
    return cls(message, errcode, status)


def is_room_refusal(exc: BaseException) -> bool:
    """The room refused the bot (kicked, left, or gone): another room may work, the same one will not."""
    return isinstance(exc, MatrixForbidden | MatrixNotFound)


def is_permanent_send_failure(exc: BaseException) -> bool:
    """Forbidden, unknown room, or message too large: sending the same thing again fails again."""
    return is_room_refusal(exc) or isinstance(exc, MatrixTooLarge)
