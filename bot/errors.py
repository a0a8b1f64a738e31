"""The exception tree of gts-bot.

    GtsBotError
    ├── StartupError                     the bot cannot start; carries a distinct process exit code
    │   ├── ConfigError                  bad configuration (a list of problems, each naming its key)
    │   ├── KeyRingError                 key file missing, unreadable, malformed or not the right key
    │   │   └── KeyFileExposedError      the key file is group/world-readable (refused, exit code 72)
    │   ├── DatabaseVersionError         the database has a revision this code does not know
    │   └── WorkerIdInUseError           a live relay worker already runs under this --worker-id
    ├── DecryptionError                  a stored ciphertext did not authenticate (tampered, moved, wrong key)
    └── UserFacingError                  its str() is safe and meant to be shown to the Matrix user
        ├── CommandError                 bad command usage or a refused request
        └── FediverseError               anything that went wrong talking to a fediverse instance
            ├── InvalidInstanceError     what the user typed is not an instance we accept
            ├── ForbiddenAddressError    the instance resolves to a loopback/private/reserved address
            ├── InstanceUnreachableError DNS failure, refused connection, TLS failure, timeout
            │   ├── DnsError
            │   │   └── LookupsBusyError every resolver thread is busy: try again later (nothing was sent)
            │   ├── TlsError
            │   └── InstanceTimeoutError
            ├── UnexpectedRedirectError  the instance redirected somewhere else
            ├── NotAFediverseServerError the host does not speak the Mastodon client API
            ├── BadResponseError         malformed JSON, wrong shape, body too large, unexpected status
            │   └── ResponseTooLargeError a body past max_response_bytes (keeps the part read, never shown)
            ├── RateLimitedError         429 from the instance (carries retry_after seconds)
            ├── TokenRejectedError       401: the token is revoked, unknown, or the account is gone
            ├── InsufficientScopeError   403: the token lacks a scope the call needs
            ├── InactiveLoginError       403 (Mastodon): login unconfirmed, pending approval or disabled
            ├── RemoteNotFoundError      404: the status, account or follow request is gone (or hidden)
            ├── ActionRefusedError       400/422 on a write: the server refused the post or action
            ├── StreamRefusedError       the streaming server refused the stream (handshake or error frame)
            ├── RevokeUnsupportedError   the instance has no /oauth/revoke endpoint
            └── OAuthError               the OAuth exchange failed
                ├── InvalidCodeError     unknown or already used authorization code
                ├── ExpiredCodeError     the code was valid but too old (or not for this app/redirect)
                ├── InvalidClientError   the instance no longer knows our app registration
                └── InvalidRedirectError the redirect URI does not match the app's

Rule: a UserFacingError's message never contains a token, client secret, authorization code or key.
Internal errors are logged with a short reference (see `bot.errors.new_reference`) and the user is told
only the reference.
"""

from __future__ import annotations

import secrets


class GtsBotError(Exception):
    """Base of every error gts-bot raises on purpose."""


class StartupError(GtsBotError):
    """The bot cannot start. `exit_code` is what the process exits with."""

    exit_code: int = 1


class ConfigError(StartupError):
    """Bad configuration. Every problem names the key it is about."""

    exit_code = 78  # EX_CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class KeyRingError(StartupError):
    """The encryption key file is missing, unreadable, malformed, or cannot decrypt stored data."""

    exit_code = 77  # EX_NOPERM is the closest sysexits code: we cannot read our own secrets


class KeyFileExposedError(KeyRingError):
    """The key file can be read by the group or by everyone: the bot refuses to use it until it is 0600."""

    exit_code = 72  # EX_OSFILE: a file the bot depends on is in a bad state; `chmod 600` fixes it


class DatabaseVersionError(StartupError):
    """The database schema revision is unknown to this code (a newer gts-bot wrote it)."""

    exit_code = 75  # EX_TEMPFAIL: upgrading the bot fixes it


class WorkerIdInUseError(StartupError):
    """A live relay worker has this id: two processes under one id would both pass the write guard."""

    exit_code = 75  # EX_TEMPFAIL: a crashed worker's heartbeat expires, so a restart under its id succeeds


class DecryptionError(GtsBotError):
    """A stored ciphertext did not authenticate: tampered, copied to another row, or wrong key."""


class UserFacingError(GtsBotError):
    """An error whose text is safe to show to the user who caused it."""


class CommandError(UserFacingError):
    """Bad command usage or a refused request."""


class FediverseError(UserFacingError):
    """Something went wrong talking to a fediverse instance."""


class InvalidInstanceError(FediverseError):
    pass


class ForbiddenAddressError(FediverseError):
    pass


class InstanceUnreachableError(FediverseError):
    pass


class DnsError(InstanceUnreachableError):
    pass


class LookupsBusyError(DnsError):
    """The resolver's threads are all waiting on slow name servers; the lookup was not even started."""


class TlsError(InstanceUnreachableError):
    pass


class InstanceTimeoutError(InstanceUnreachableError):
    pass


class UnexpectedRedirectError(FediverseError):
    pass


class NotAFediverseServerError(FediverseError):
    pass


class BadResponseError(FediverseError):
    pass


class ResponseTooLargeError(BadResponseError):
    """The body passed `max_response_bytes`. `prefix` is what was read up to that limit, so a caller can
    still learn something from it (the first item's id); it is never part of the message."""

    def __init__(self, message: str, prefix: bytes = b"") -> None:
        super().__init__(message)
        self.prefix = prefix


class PageTooLargeError(ResponseTooLargeError):
    """A notification page too large to read; `first_id` is its first notification's id, if it could be
    read from the start of the body."""

    def __init__(self, message: str, first_id: str | None) -> None:
        super().__init__(message)
        self.first_id = first_id


class RateLimitedError(FediverseError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenRejectedError(FediverseError):
    pass


class InsufficientScopeError(FediverseError):
    pass


class InactiveLoginError(FediverseError):
    pass


class RemoteNotFoundError(FediverseError):
    pass


class ActionRefusedError(FediverseError):
    pass


class StreamRefusedError(FediverseError):
    """The streaming server said no: a 400/401/403 handshake, or an in-stream `{"error", "status"}` frame.

    Not proof that the token is dead (Akkoma answers 401 to a token it cannot find in the request): a REST
    call with the same token decides that. `status` is the HTTP status given; `in_stream` tells a frame.
    """

    def __init__(self, message: str, *, status: int, in_stream: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.in_stream = in_stream


class RevokeUnsupportedError(FediverseError):
    pass


class OAuthError(FediverseError):
    pass


class InvalidCodeError(OAuthError):
    pass


class ExpiredCodeError(OAuthError):
    pass


class InvalidClientError(OAuthError):
    pass


class InvalidRedirectError(OAuthError):
    pass


def new_reference() -> str:
    """A short random reference to give a user for an internal error that is logged in full."""
    return secrets.token_hex(4)
