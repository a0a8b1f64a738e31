"""What an instance's OAuth error answer means: the one place these remote codes map to exceptions.

GoToSocial and Mastodon differ (see the reference, §3.2): GoToSocial answers "sql: no rows in result set"
for an unknown or used code (and for an unknown client), and `invalid_grant` for an expired code or one
issued to another request; Mastodon says `invalid_grant` for all of those. Iceshrimp.NET
(`Controllers/Mastodon/AuthController.cs`) sends no RFC code: it puts Doorkeeper's *descriptions* in
`error`, the invalid_client one with a 401 when no code matches the client (a mistyped or unknown code reads
the same as an unknown client there) and the invalid_grant one with a 400 for a code already redeemed.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.errors import (
    ExpiredCodeError,
    FediverseError,
    InvalidClientError,
    InvalidCodeError,
    InvalidRedirectError,
    OAuthError,
)
from bot.fediverse._http import RawResponse, server_text, status_error
from bot.fediverse.instance import InstanceRef

__all__ = ["NO_ROWS", "oauth_error"]

NO_ROWS = "sql: no rows in result set"
# Doorkeeper's descriptions, which Iceshrimp.NET answers as the `error` itself.
_NO_MATCHING_CODE = (
    "Client authentication failed due to unknown client, no client authentication included, or unsupported "
    "authentication method."
)
_GRANT_INVALID = (
    "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used "
    "in the authorization request, or was issued to another client."
)


def oauth_error(
    instance: InstanceRef, response: RawResponse, error: str, description: str, *, redact: Sequence[str]
) -> FediverseError:
    """Map an OAuth error response to an exception (the one place these codes are interpreted)."""
    name = instance.display
    if error == "invalid_client":
        return InvalidClientError(
            f"{name} no longer recognises the bot's app registration; start again so the bot registers anew."
        )
    if error in (NO_ROWS, _NO_MATCHING_CODE):
        return InvalidCodeError(
            f"{name} did not recognise that code: it may have been used already, mistyped, or belong to "
            "another request. Each code works once; start again to get a new one."
        )
    if error == _GRANT_INVALID:
        error = "invalid_grant"
    if error == "invalid_grant":
        is_gts = "gotosocial" in response.headers.get("server", "").lower() or description.startswith(
            "Bad Request: could not get access token"
        )
        if is_gts:
            # GoToSocial says invalid_grant for an expired code and for one issued to another request;
            # a used or unknown code is "no rows" there. Elsewhere (Mastodon) it covers all of these.
            return ExpiredCodeError(
                f"{name} says the code has expired or does not belong to this request; codes are only "
                "valid for about 5 minutes. Start again to get a new one."
            )
        return InvalidCodeError(
            f"{name} did not accept that code: it may be wrong, used already, or expired. "
            "Start again to get a new one."
        )
    if response.status == 403 and error == "invalid redirect uri":
        return InvalidRedirectError(
            f"{name} says the bot's redirect address does not match its app registration; "
            "start again so the bot registers anew."
        )
    if response.status in (502, 503, 504):
        return status_error(instance, response)
    detail = server_text(error or description, redact=redact)
    return OAuthError(
        f"{name} refused the token request (HTTP {response.status}" + (f": {detail})." if detail else ").")
    )
