"""Write endpoints of the fake (issue 12): statuses, favourites, boosts, follow requests, and the reads a
client needs around them. Each behaves like the profile's server:

- Scopes, from the servers' controllers: posting and boosting need `write:statuses` (GoToSocial
  `statuscreate.go`/`statusboost.go`, Mastodon `StatusesController`/`Statuses::ReblogsController`, Akkoma
  `StatusController`); favourites `write:favourites`; follow requests `write:follows` (Mastodon and
  Akkoma also take the legacy `follow`). A refused scope gets each server's own 403 text.
- Idempotency-Key (profile ``idempotency``): GoToSocial ignores it; Mastodon's PostStatusService
  remembers (account, key) → status for an hour and answers a repeat with that status; Akkoma's
  IdempotencyPlug replays any cached response to the same token, method, path and key, with
  ``idempotent-replayed: true``, refusals included.
- Every call to a write endpoint is recorded in ``state.writes.calls`` before anything is checked.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes.gotosocial.core import iso_seconds, token_permits
from tests.fakes.gotosocial.httputil import (
    JSON_TYPE,
    ApiError,
    Auth,
    api_error_response,
    bearer,
    bind,
    json_response,
    require_accept,
    state_of,
    token_auth,
)
from tests.fakes.gotosocial.render import DEFAULT_PRIVACY, account_json, status_json
from tests.fakes.gotosocial.state import FakeState, FakeUser, StoredStatus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VISIBILITIES = ("public", "unlisted", "private", "direct")
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_]+(?:@[A-Za-z0-9.:\[\]-]+)?)")


# --- errors in each server's words -----------------------------------------------------------------
def _error(state: FakeState, status: int, gts_help: str, mastodon: str, akkoma: str) -> ApiError:
    """Iceshrimp.NET's GracefulException texts for these cases are Mastodon's ("Record not found", "This
    action is outside the authorized scopes")."""
    if state.profile.software in ("mastodon", "Iceshrimp.NET"):
        return ApiError.raw(status, mastodon)
    if state.profile.software == "akkoma":
        return ApiError.raw(status, akkoma)
    return ApiError(status, gts_help)


def _not_found(state: FakeState, what: str) -> ApiError:
    return _error(state, 404, f"{what} not found", "Record not found", "Record not found")


def write_auth(request: web.Request, *scopes: str) -> Auth:
    """Token auth with the profile's own 403 text when no scope of the token covers one of `scopes`."""
    state = state_of(request)
    auth = token_auth(request)
    if not token_permits(auth.token.scope, *scopes):
        raise _error(
            state,
            403,
            "token has insufficient scope permission",
            "This action is outside the authorized scopes",
            f"Insufficient permissions: {' | '.join(scopes)}.",
        )
    return auth


def _follow_scopes(state: FakeState, kind: str) -> tuple[str, ...]:
    legacy = ("follow",) if state.profile.follow_scope_covers_follow_requests else ()
    return (f"{kind}:follows", *legacy)


# --- recording and Akkoma's IdempotencyPlug ---------------------------------------------------------
def recorded(handler: Handler) -> Handler:
    """Record the call first; then, on an Akkoma profile, replay or cache by Idempotency-Key."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        state = state_of(request)
        bound = await bind(request)
        body = (
            {k: v for k, v in bound.json.items() if isinstance(v, str)}
            if bound.kind == "json"
            else {k: v[0] for k, v in bound.form.items() if k not in request.query}
        )
        state.writes.calls.append((request.method, request.path, body))
        key = request.headers.get("Idempotency-Key")
        if state.profile.idempotency != "response_cache" or not key:
            return await handler(request)
        cache_key = (bearer(request) or "", request.method, request.path, key)
        now = time.monotonic()
        cached = state.writes.cached_responses.get(cache_key)
        if cached is not None and now - cached[3] < state.profile.idempotency_ttl:
            status, content_type, payload, _ = cached
            replay = web.Response(
                status=status, body=payload, headers={"idempotency-key": key, "idempotent-replayed": "true"}
            )
            replay.content_type = content_type
            return replay
        try:
            response = await handler(request)
        except ApiError as err:
            response = api_error_response(request, err)
        if isinstance(response, web.Response) and response.body is not None:
            assert isinstance(response.body, bytes)
            state.writes.cached_responses[cache_key] = (
                response.status,
                response.content_type,
                response.body,
                now,
            )
            response.headers["idempotency-key"] = key
        return response

    return wrapper


# --- statuses ------------------------------------------------------------------------------------
def _viewer(auth: Auth) -> FakeUser:
    assert auth.user is not None
    return auth.user


def _account_of(state: FakeState, user: FakeUser) -> FakeUser:
    return next((u for u in state.users.values() if u.account_id == user.account_id), user)


def visible_to(stored: StoredStatus, account_id: str) -> bool:
    if stored.visibility in ("public", "unlisted") or stored.author_account_id == account_id:
        return True
    return account_id in stored.mentioned_account_ids


def _find_status(state: FakeState, status_id: str, viewer: FakeUser) -> StoredStatus:
    stored = state.writes.statuses.get(status_id)
    if stored is None or not visible_to(stored, viewer.account_id):
        raise _not_found(state, "status")  # a status you may not see does not exist, on every server
    return stored


def _rendered(state: FakeState, stored: StoredStatus, viewer: FakeUser) -> dict[str, Any]:
    body = dict(stored.body)
    body["favourited"] = (viewer.account_id, body["id"]) in state.writes.favourites
    body["reblogged"] = (viewer.account_id, body["id"]) in state.writes.reblogs
    return body


async def get_status(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = write_auth(request, "read:statuses")
    state = state_of(request)
    viewer = _viewer(auth)
    return json_response(_rendered(state, _find_status(state, request.match_info["id"], viewer), viewer))


def store_status(
    state: FakeState,
    author: FakeUser,
    text: str,
    *,
    visibility: str = "public",
    spoiler_text: str = "",
    in_reply_to: StoredStatus | None = None,
    status_html: str | None = None,
) -> StoredStatus:
    """Create a status as its server would: mentions resolved from `@acct` words of the text."""
    status_id = state.new_id()
    mentioned: list[FakeUser] = []
    for name in _MENTION.findall(text):
        user = state.users.get(name.removesuffix("@" + state.account_domain))
        if user is not None and user not in mentioned:
            mentioned.append(user)
    content = status_html if status_html is not None else f"<p>{html.escape(text)}</p>"
    body = status_json(state, author, status_id, iso_seconds(time.time()), content, spoiler_text)
    body["visibility"] = visibility
    body["mentions"] = [
        {"id": u.account_id, "username": u.username, "acct": u.acct, "url": account_json(state, u)["url"]}
        for u in mentioned
    ]
    if in_reply_to is not None:
        body["in_reply_to_id"] = in_reply_to.body["id"]
        body["in_reply_to_account_id"] = in_reply_to.author_account_id
    stored = StoredStatus(
        body=body,
        author_account_id=author.account_id,
        visibility=visibility,
        mentioned_account_ids=frozenset(u.account_id for u in mentioned),
    )
    state.writes.statuses[status_id] = stored
    state.statuses_by_user[author.account_id] = state.statuses_by_user.get(author.account_id, 0) + 1
    return stored


def _status_form(state: FakeState, fields: dict[str, str]) -> tuple[str, str, str, str | None]:
    text, spoiler = fields.get("status", ""), fields.get("spoiler_text", "")
    if not text.strip() and state.profile.software == "Iceshrimp.NET":  # its StatusController.PostNote
        raise ApiError.raw(400, "Posts must have text, media or poll")
    if not text.strip():
        raise _error(
            state,
            400 if state.profile.software == "gotosocial" else 422,
            "no status content, content warning, media, or poll provided",
            "Validation failed: Text can't be blank",
            "Cannot post an empty status without attachments",
        )
    length = len(text) + len(spoiler)
    if length > state.profile.status_char_limit:
        limit = state.profile.status_char_limit
        raise _error(
            state,
            400 if state.profile.software == "gotosocial" else 422,
            f"status too long, {length} characters provided (including spoiler/content warning) "
            f"but limit is {limit}",
            f"Validation failed: Text character limit of {limit} exceeded",
            "The status is over the character limit",
        )
    visibility = fields.get("visibility") or ""
    if visibility and visibility not in VISIBILITIES:
        raise _error(
            state,
            400 if state.profile.software == "gotosocial" else 422,
            f"visibility {visibility} not recognized",
            "Validation failed: Visibility is not included in the list",
            "Invalid visibility",
        )
    return text, spoiler, visibility, fields.get("in_reply_to_id") or None


async def create_status(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = write_auth(request, "write:statuses")
    state = state_of(request)
    author = _account_of(state, _viewer(auth))
    bound = await bind(request)
    fields = (
        {k: v for k, v in bound.json.items() if isinstance(v, str)}
        if bound.kind == "json"
        else {k: v[0] for k, v in bound.form.items()}
    )
    key = request.headers.get("Idempotency-Key")
    if state.profile.idempotency == "status_per_account" and key:
        remembered = state.writes.posted_by_key.get((author.account_id, key))
        if remembered is not None and time.monotonic() - remembered[1] < state.profile.idempotency_ttl:
            return json_response(_rendered(state, state.writes.statuses[remembered[0]], author))
    text, spoiler, visibility, reply_to_id = _status_form(state, fields)
    parent = _find_status(state, reply_to_id, author) if reply_to_id else None
    stored = store_status(
        state,
        author,
        text,
        visibility=visibility or DEFAULT_PRIVACY,
        spoiler_text=spoiler,
        in_reply_to=parent,
    )
    if state.profile.idempotency == "status_per_account" and key:
        state.writes.posted_by_key[(author.account_id, key)] = (stored.body["id"], time.monotonic())
    return json_response(_rendered(state, stored, author))


async def account_statuses(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = write_auth(request, "read:statuses")
    state = state_of(request)
    viewer = _viewer(auth)
    account_id = request.match_info["id"]
    if not any(u.account_id == account_id for u in state.users.values()):
        raise _not_found(state, "account")
    try:
        limit = max(1, min(40, int(request.query.get("limit") or 20)))
    except ValueError:
        raise ApiError(400, "bad integer limit value") from None
    own = [
        s
        for s in reversed(state.writes.statuses.values())
        if s.author_account_id == account_id and visible_to(s, viewer.account_id)
    ]
    return json_response([_rendered(state, s, viewer) for s in own[:limit]])


async def _status_action(
    request: web.Request, scope: str, act: Callable[[FakeState, FakeUser, StoredStatus], dict[str, Any]]
) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = write_auth(request, scope)
    state = state_of(request)
    viewer = _account_of(state, _viewer(auth))
    stored = _find_status(state, request.match_info["id"], viewer)
    return json_response(act(state, viewer, stored))


def _favourite(state: FakeState, viewer: FakeUser, stored: StoredStatus) -> dict[str, Any]:
    state.writes.favourites.add((viewer.account_id, stored.body["id"]))
    return _rendered(state, stored, viewer)


def _unfavourite(state: FakeState, viewer: FakeUser, stored: StoredStatus) -> dict[str, Any]:
    state.writes.favourites.discard((viewer.account_id, stored.body["id"]))
    return _rendered(state, stored, viewer)


def _reblog(state: FakeState, viewer: FakeUser, stored: StoredStatus) -> dict[str, Any]:
    if stored.visibility in ("private", "direct") and stored.author_account_id != viewer.account_id:
        raise _error(
            state,
            403,
            "you are not allowed to reblog this status",
            "This action is not allowed",
            "Could not repeat",
        )
    key = (viewer.account_id, stored.body["id"])
    boost_id = state.writes.reblogs.setdefault(key, state.new_id())
    wrapper = status_json(state, viewer, boost_id, iso_seconds(time.time()), "", "")
    wrapper["reblog"] = _rendered(state, stored, viewer)
    return wrapper


def _unreblog(state: FakeState, viewer: FakeUser, stored: StoredStatus) -> dict[str, Any]:
    state.writes.reblogs.pop((viewer.account_id, stored.body["id"]), None)
    return _rendered(state, stored, viewer)


async def favourite(request: web.Request) -> web.Response:
    return await _status_action(request, "write:favourites", _favourite)


async def unfavourite(request: web.Request) -> web.Response:
    return await _status_action(request, "write:favourites", _unfavourite)


async def reblog(request: web.Request) -> web.Response:
    return await _status_action(request, state_of(request).profile.reblog_scope, _reblog)


async def unreblog(request: web.Request) -> web.Response:
    return await _status_action(request, state_of(request).profile.reblog_scope, _unreblog)


# --- follow requests -------------------------------------------------------------------------------
def add_follow_request(state: FakeState, target: FakeUser, requester: FakeUser) -> None:
    pending = state.writes.follow_requests.setdefault(target.account_id, [])
    if requester.account_id not in pending:
        pending.append(requester.account_id)


async def list_follow_requests(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    state = state_of(request)
    auth = write_auth(request, *_follow_scopes(state, "read"))
    viewer = _viewer(auth)
    pending = state.writes.follow_requests.get(viewer.account_id, [])
    accounts = [u for account_id in pending for u in state.users.values() if u.account_id == account_id]
    return json_response([account_json(state, u) for u in accounts])


def _relationship(state: FakeState, viewer: FakeUser, other_id: str) -> dict[str, Any]:
    followed_by = other_id in state.writes.followers.get(viewer.account_id, set())
    return {
        "id": other_id,
        "following": False,
        "followed_by": followed_by,
        "showing_reblogs": False,
        "notifying": False,
        "blocking": False,
        "blocked_by": False,
        "muting": False,
        "muting_notifications": False,
        "requested": False,
        "requested_by": False,
        "domain_blocking": False,
        "endorsed": False,
        "note": "",
    }


async def _answer_follow_request(request: web.Request, accept: bool) -> web.Response:
    require_accept(request, JSON_TYPE)
    state = state_of(request)
    auth = write_auth(request, *_follow_scopes(state, "write"))
    viewer = _viewer(auth)
    requester_id = request.match_info["id"]
    pending = state.writes.follow_requests.get(viewer.account_id, [])
    if requester_id not in pending:
        raise _not_found(state, "follow request")
    pending.remove(requester_id)
    if accept:
        state.writes.followers.setdefault(viewer.account_id, set()).add(requester_id)
    return json_response(_relationship(state, viewer, requester_id))


async def authorize_follow_request(request: web.Request) -> web.Response:
    return await _answer_follow_request(request, True)


async def reject_follow_request(request: web.Request) -> web.Response:
    return await _answer_follow_request(request, False)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/statuses/{id}", get_status, allow_head=False)
    router.add_post("/api/v1/statuses", recorded(create_status))
    for name, handler in (
        ("favourite", favourite),
        ("unfavourite", unfavourite),
        ("reblog", reblog),
        ("unreblog", unreblog),
    ):
        router.add_post(f"/api/v1/statuses/{{id}}/{name}", recorded(handler))
    router.add_get("/api/v1/accounts/{id}/statuses", account_statuses, allow_head=False)
    router.add_get("/api/v1/follow_requests", list_follow_requests, allow_head=False)
    router.add_post("/api/v1/follow_requests/{id}/authorize", recorded(authorize_follow_request))
    router.add_post("/api/v1/follow_requests/{id}/reject", recorded(reject_follow_request))
