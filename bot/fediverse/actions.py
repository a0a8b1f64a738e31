"""The write side of the fediverse client (issue 12): read one status, post, favourite, boost, answer
follow requests, and list one's own recent posts (to find a post again after a crash).

Built on the same `InstanceHttp` as `FediverseClient` (`client.actions` shares its pacing, address guard,
size caps and error mapping), and raising the same `FediverseError` tree:

- 401 → `TokenRejectedError`; 403 naming a scope → `InsufficientScopeError`; Mastodon's inactive-login
  403 → `InactiveLoginError`; any other 403 (e.g. boosting a followers-only post) → `ActionRefusedError`;
- 404 → `RemoteNotFoundError`; 400/422 → `ActionRefusedError` with the server's (cleaned) reason;
- 429 → `RateLimitedError` (after the pacer's own retries); 502-504 → `InstanceUnreachableError`.

No message carries the token: the server's text is cleaned by `server_text` with the token redacted.
"""

from __future__ import annotations

import re

from bot.errors import (
    ActionRefusedError,
    BadResponseError,
    FediverseError,
    InsufficientScopeError,
    RemoteNotFoundError,
)
from bot.fediverse._http import (
    InstanceHttp,
    RawResponse,
    decode_json,
    error_fields,
    login_state_error,
    server_text,
    status_error,
)
from bot.fediverse.instance import InstanceRef
from bot.fediverse.models import PostedStatus, ShapeError, Status, parse_posted, parse_status
from bot.fediverse.replies import StatusDraft

__all__ = ["MAX_RECENT_STATUSES", "FediverseActions"]

MAX_RECENT_STATUSES = 40  # the most Mastodon returns per page of an account's statuses
_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")  # ids go into paths: URL-safe ASCII only
# 403 bodies that are about the token's scopes: GoToSocial, Mastodon (Doorkeeper), Akkoma.
_SCOPE_WORDS = ("scope", "insufficient permissions")


def _checked_id(instance: InstanceRef, value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise RemoteNotFoundError(f"There is no such {what} on {instance.display}.")
    return value


class FediverseActions:
    def __init__(self, http: InstanceHttp) -> None:
        self._http = http

    # -- reads around an action ----------------------------------------------------------------------

    async def get_status(self, instance: InstanceRef, token: str, status_id: str) -> Status:
        path = f"/api/v1/statuses/{_checked_id(instance, status_id, 'post')}"
        response = await self._http.request(instance, "GET", path, token=token)
        self._raise_for(instance, response, token, "post", "read the post")
        try:
            return parse_status(decode_json(instance, response))
        except ShapeError as exc:
            raise BadResponseError(
                f"{instance.display} sent a post the bot could not understand ({exc})."
            ) from None

    async def recent_own_statuses(
        self, instance: InstanceRef, token: str, account_id: str, *, limit: int
    ) -> list[Status]:
        """The account's newest statuses (at most `limit`, itself at most MAX_RECENT_STATUSES), newest
        first. Statuses the bot cannot parse are skipped."""
        path = f"/api/v1/accounts/{_checked_id(instance, account_id, 'account')}/statuses"
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("limit", str(max(1, min(limit, MAX_RECENT_STATUSES))))
        ]
        response = await self._http.request(instance, "GET", path, params=params, token=token)
        self._raise_for(instance, response, token, "account", "list your posts")
        data = decode_json(instance, response)
        if not isinstance(data, list):
            raise BadResponseError(f"{instance.display} sent a list of posts that is not a list.")
        statuses: list[Status] = []
        for raw in data[:MAX_RECENT_STATUSES]:
            try:
                statuses.append(parse_status(raw))
            except ShapeError:
                continue
        return statuses

    # -- writes ---------------------------------------------------------------------------------------

    async def post_status(
        self, instance: InstanceRef, token: str, draft: StatusDraft, *, idempotency_key: str
    ) -> PostedStatus:
        """Post `draft`. Servers that honour `Idempotency-Key` (Mastodon, Akkoma) answer a repeat with the
        first post; GoToSocial ignores it (see `recent_own_statuses`)."""
        form = {"status": draft.text}
        if draft.in_reply_to_id is not None:
            form["in_reply_to_id"] = _checked_id(instance, draft.in_reply_to_id, "post")
        if draft.visibility is not None:
            form["visibility"] = draft.visibility.api_name
        if draft.spoiler_text:
            form["spoiler_text"] = draft.spoiler_text
        response = await self._http.request(
            instance,
            "POST",
            "/api/v1/statuses",
            data=form,
            token=token,
            extra_headers={"Idempotency-Key": idempotency_key},
        )
        self._raise_for(instance, response, token, "post you replied to", "publish the post")
        try:
            return parse_posted(decode_json(instance, response))
        except ShapeError as exc:
            raise BadResponseError(
                f"{instance.display} answered the post with something the bot could not understand ({exc})."
            ) from None

    async def favourite(self, instance: InstanceRef, token: str, status_id: str) -> None:
        await self._status_action(instance, token, status_id, "favourite", "favourite the post")

    async def unfavourite(self, instance: InstanceRef, token: str, status_id: str) -> None:
        await self._status_action(instance, token, status_id, "unfavourite", "remove the favourite")

    async def reblog(self, instance: InstanceRef, token: str, status_id: str) -> None:
        await self._status_action(instance, token, status_id, "reblog", "boost the post")

    async def unreblog(self, instance: InstanceRef, token: str, status_id: str) -> None:
        await self._status_action(instance, token, status_id, "unreblog", "undo the boost")

    async def authorize_follow_request(self, instance: InstanceRef, token: str, account_id: str) -> None:
        await self._follow_request(instance, token, account_id, "authorize", "accept the follow request")

    async def reject_follow_request(self, instance: InstanceRef, token: str, account_id: str) -> None:
        await self._follow_request(instance, token, account_id, "reject", "reject the follow request")

    async def _status_action(
        self, instance: InstanceRef, token: str, status_id: str, verb: str, doing: str
    ) -> None:
        path = f"/api/v1/statuses/{_checked_id(instance, status_id, 'post')}/{verb}"
        response = await self._http.request(instance, "POST", path, token=token)
        self._raise_for(instance, response, token, "post", doing)

    async def _follow_request(
        self, instance: InstanceRef, token: str, account_id: str, verb: str, doing: str
    ) -> None:
        path = f"/api/v1/follow_requests/{_checked_id(instance, account_id, 'follow request')}/{verb}"
        response = await self._http.request(instance, "POST", path, token=token)
        self._raise_for(instance, response, token, "follow request", doing)

    # -- errors ---------------------------------------------------------------------------------------

    @staticmethod
    def _raise_for(instance: InstanceRef, response: RawResponse, token: str, thing: str, doing: str) -> None:
        if 200 <= response.status < 300:
            return
        raise action_error(instance, response, token, thing, doing)


def action_error(
    instance: InstanceRef, response: RawResponse, token: str, thing: str, doing: str
) -> FediverseError:
    """The error for a failed action: `thing` is what a 404 says is gone, `doing` what was refused."""
    name = instance.display
    error, _ = error_fields(response)
    reason = server_text(error, redact=(token,))
    if response.status == 404:
        return RemoteNotFoundError(f"{name} says the {thing} does not exist (or you may not see it).")
    if response.status == 403:
        if any(word in error.lower() for word in _SCOPE_WORDS):
            return InsufficientScopeError(
                f"{name} refused to {doing}: the bot's access token lacks the permission (scope) for it."
            )
        login = login_state_error(instance, response)
        if login is not None:
            return login
        return ActionRefusedError(f"{name} refused to {doing}" + (f": {reason}." if reason else "."))
    if response.status in (400, 422):
        return ActionRefusedError(f"{name} refused to {doing}" + (f": {reason}." if reason else "."))
    return status_error(instance, response)
