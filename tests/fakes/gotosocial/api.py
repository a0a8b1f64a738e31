"""Client API of the fake GoToSocial: accounts, notifications, instance documents, health (§6, §7, §10)."""

from __future__ import annotations

import html
import time
import urllib.parse
from typing import Any

from aiohttp import web

from tests.fakes.gotosocial.core import (
    NOTIFICATION_TYPES,
    OWN_STATUS_TYPES,
    STATUS_TYPES,
    go_json,
    iso_seconds,
)
from tests.fakes.gotosocial.httputil import (
    JSON_TYPE,
    ApiError,
    bearer,
    json_response,
    lookup_auth,
    require_accept,
    state_of,
    token_auth,
)
from tests.fakes.gotosocial.profiles import Profile
from tests.fakes.gotosocial.render import (
    account_json,
    instance_v1,
    instance_v2,
    nodeinfo,
    nodeinfo_links,
    status_json,
)
from tests.fakes.gotosocial.state import FakeState, StoredNotification, StoredStatus
from tests.fakes.gotosocial.writes import add_follow_request

_KNOWN_TYPES = NOTIFICATION_TYPES


def id_key(state: FakeState, value: str) -> tuple[int, str]:
    """Order of ids: ULIDs compare as strings; Mastodon's numeric ids by length, then value."""
    return (len(value), value) if state.numeric_ids else (0, value)


async def verify_credentials(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = token_auth(request, "profile", "read:accounts")
    assert auth.user is not None
    return json_response(account_json(state_of(request), auth.user, with_source=True))


def _parse_limit(profile: Profile, raw: str | None) -> int:
    """GtS: default 20, at most 80; Mastodon: 40 / 80; Akkoma: capped at 40. Clamped, never an error."""
    default = profile.notification_limit_default
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ApiError(400, "bad integer limit value") from None
    if value == 0:
        return default
    return max(1, min(profile.notification_limit_max, value))


def _types(request: web.Request, key: str) -> list[str]:
    return [t for t in request.query.getall(key, []) if t in _KNOWN_TYPES]


def _link_header(state: FakeState, page: list[StoredNotification], limit: int,
                 extra: list[tuple[str, str]]) -> str:
    def url(cursor_key: str, cursor: str) -> str:
        pairs = [("limit", str(limit)), (cursor_key, cursor), *extra]
        pairs.sort(key=lambda kv: kv[0])
        return f"{state.base_url}/api/v1/notifications?{urllib.parse.urlencode(pairs)}"

    return f'<{url("max_id", page[-1].id)}>; rel="next", <{url("min_id", page[0].id)}>; rel="prev"'


async def list_notifications(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = token_auth(request, "read:notifications")
    assert auth.user is not None
    state = state_of(request)
    q = request.query
    limit = _parse_limit(state.profile, q.get("limit"))
    max_id, since_id, min_id = q.get("max_id", ""), q.get("since_id", ""), q.get("min_id", "")
    types, excluded = _types(request, "types[]"), _types(request, "exclude_types[]")

    def key(value: str) -> tuple[int, str]:
        return id_key(state, value)

    items = [
        n for n in state.notifications
        if n.user_id == auth.user.user_id
        and (not types or n.type in types)
        and n.type not in excluded
        and (not max_id or key(n.id) < key(max_id))
    ]
    items.sort(key=lambda n: key(n.id))
    if min_id:  # wins over since_id: the items right after min_id, returned newest first
        page = [n for n in items if key(n.id) > key(min_id)][:limit]
        page.reverse()
    else:
        if since_id:
            items = [n for n in items if key(n.id) > key(since_id)]
        page = list(reversed(items))[:limit]
    headers: dict[str, str] = {}
    if page:
        extra = [("exclude_types[]", t) for t in excluded] + [("types[]", t) for t in types]
        headers["Link"] = _link_header(state, page, limit, extra)
    state.served_over_rest.update(n.id for n in page)
    if any(stream.user_id == auth.user.user_id for stream in state.streams):
        user_id = auth.user.user_id
        state.pages_while_streaming[user_id] = state.pages_while_streaming.get(user_id, 0) + 1
    return json_response([n.body for n in page], headers=headers)


async def get_notification(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = token_auth(request, "read:notifications")
    assert auth.user is not None
    state = state_of(request)
    found = next((n for n in state.notifications if n.id == request.match_info["id"]), None)
    if found is None:
        raise ApiError(404, "notification not found")
    if found.user_id != auth.user.user_id:
        raise ApiError(404)
    return json_response(found.body)


async def clear_notifications(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    auth = token_auth(request, "write:notifications")
    assert auth.user is not None
    state = state_of(request)
    state.notifications = [n for n in state.notifications if n.user_id != auth.user.user_id]
    return json_response({})


def create_notification(state: FakeState, username: str, type_: str, from_username: str, *,
                        status_text: str | None = None, spoiler_text: str = "",
                        status_html: str | None = None) -> dict[str, Any]:
    """Create a notification for a local user, store it and push it to their open streams."""
    if type_ not in _KNOWN_TYPES + state.profile.extra_notification_types or type_ == "admin.report":
        raise ValueError(f"{state.profile.name} does not create {type_!r} notifications")
    target = state.users.get(username)
    if target is None or target.domain is not None:
        raise KeyError(f"no local user {username!r}")
    origin = state.ensure_account(from_username)
    now = time.time()
    status: dict[str, Any] | None = None
    if type_ in STATUS_TYPES:
        author = target if type_ in OWN_STATUS_TYPES else origin
        status_id = state.new_id()
        if status_html is None:
            text = status_text if status_text is not None else f"Hello from @{origin.acct}"
            status_html = f"<p>{html.escape(text)}</p>"
        state.statuses_by_user[author.account_id] = state.statuses_by_user.get(author.account_id, 0) + 1
        status = status_json(state, author, status_id, iso_seconds(now), status_html, spoiler_text)
        state.writes.statuses[status_id] = StoredStatus(status, author.account_id, "public")
    if type_ == "follow_request":
        add_follow_request(state, target, origin)
    body: dict[str, Any] = {"id": state.new_id(), "type": type_, "created_at": iso_seconds(now),
                            "account": account_json(state, origin)}
    if status is not None:
        body["status"] = status
    body.update(_type_fields(state, type_, now))
    state.notifications.append(StoredNotification(body["id"], target.user_id, type_, body))
    state.push_notification(target.user_id, go_json(body))
    return body


def _type_fields(state: FakeState, type_: str, now: float) -> dict[str, Any]:
    """The fields Mastodon and Akkoma add to their own notification types (mastodon-family.md)."""
    if type_ in ("pleroma:emoji_reaction", "reaction"):  # "reaction": Iceshrimp.NET's name for it
        return {"emoji": "\N{PARTY POPPER}", "emoji_url": None}
    if type_ == "move":
        return {"target": account_json(state, state.ensure_account("moved@new.example"))}
    if type_ == "severed_relationships":
        return {"event": {"id": state.new_id(), "type": "domain_block", "purged": False,
                          "target_name": "blocked.example", "followers_count": 1, "following_count": 2,
                          "created_at": iso_seconds(now)}}
    if type_ == "moderation_warning":
        return {"moderation_warning": {"id": state.new_id(), "action": "none", "text": "Please be kind.",
                                       "status_ids": [], "target_account": None, "appeal": None,
                                       "created_at": iso_seconds(now)}}
    if type_ == "annual_report":
        return {"annual_report": {"year": time.gmtime(now).tm_year - 1}}
    return {}


# --- instance documents and health -----------------------------------------------------------------
def _instance_access(request: web.Request) -> web.Response | None:
    """Limited-federation Mastodon: the instance documents need a signed-in user's token."""
    state = state_of(request)
    if not state.profile.limited_federation:
        return None
    auth = lookup_auth(state, bearer(request))
    if auth is not None and auth.user is not None:
        return None
    return json_response({"error": "This API requires an authenticated user"}, 401)


async def get_instance_v1(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    return _instance_access(request) or json_response(instance_v1(state_of(request)))


async def get_instance_v2(request: web.Request) -> web.Response:
    require_accept(request, JSON_TYPE)
    if not state_of(request).profile.serves_instance_v2:
        raise ApiError(404)
    return _instance_access(request) or json_response(instance_v2(state_of(request)))


async def get_nodeinfo_links(request: web.Request) -> web.Response:
    return json_response(nodeinfo_links(state_of(request)))


async def get_nodeinfo(request: web.Request) -> web.Response:
    schema = request.match_info["schema"]
    if schema not in ("2.0", "2.1"):
        raise ApiError(404)
    body = go_json(nodeinfo(state_of(request), schema)).encode()
    ctype = f'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/{schema}#"'
    return web.Response(body=body, headers={"Content-Type": ctype})


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)
