"""App registration and the OAuth endpoints of the fake GoToSocial (§1-§4 of the reference)."""

from __future__ import annotations

import time
import urllib.parse
import uuid

from aiohttp import web

from tests.fakes.gotosocial.core import (
    HELPFUL_ADVICE,
    OOB_URI,
    authorization_code,
    oauth_secret,
    random_ulid,
    scopes_covered,
    token_permits,
)
from tests.fakes.gotosocial.httputil import (
    HTML_TYPE,
    JSON_TYPE,
    ApiError,
    bearer,
    bind,
    json_response,
    json_string_field,
    lookup_auth,
    require_accept,
    shows_banner,
    state_of,
    token_auth,
)
from tests.fakes.gotosocial.render import app_json, authorize_page, oob_page, sign_in_page
from tests.fakes.gotosocial.state import FakeApp, FakeCode, FakeState, FakeUser, Session

_INVALID_SCOPE = "The requested scope is invalid, unknown, or malformed"
_SERVER_ERROR = ("The authorization server encountered an unexpected condition that prevented it from "
                 "fulfilling the request")


# --- POST /api/v1/apps -----------------------------------------------------------------------------
def _validator(struct: str, field: str) -> str:
    return f"Key: '{struct}.{field}' Error:Field validation for '{field}' failed on the 'required' tag"


def _check_len(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ApiError(400, f"{name} must be less than {limit} characters, provided {name} was "
                            f"{len(value)} characters")


def _parse_redirects(raw: str) -> list[str]:
    out: list[str] = []
    for part in raw.split("\n"):
        uri = part.strip()
        if not uri:
            continue
        if any(c.isspace() or ord(c) < 0x20 for c in uri):
            bad = next(c for c in uri if c.isspace() or ord(c) < 0x20)
            raise ApiError(400, f'error parsing redirect URI: parse "{uri}": invalid character {bad!r} '
                                "in host name")
        normalized = urllib.parse.urlunsplit(urllib.parse.urlsplit(uri))
        if normalized not in out:
            out.append(normalized)
    if not out:
        raise ApiError(400, "no redirect URIs left after trimming space")
    return out


# Iceshrimp.NET's MastodonOauthHelpers.ValidateScopes: only these names, each once; no `profile`.
_ICESHRIMP_READ = ("accounts", "blocks", "bookmarks", "favourites", "filters", "follows", "lists", "mutes",
                   "notifications", "search", "statuses")
_ICESHRIMP_WRITE = ("accounts", "blocks", "bookmarks", "conversations", "favourites", "filters", "follows",
                    "lists", "media", "mutes", "notifications", "reports", "statuses", "bites")
ICESHRIMP_SCOPES = frozenset(
    ["read", "write", "follow", "push", "admin"]
    + [f"read:{s}" for s in _ICESHRIMP_READ]
    + [f"write:{s}" for s in _ICESHRIMP_WRITE]
)


def _client_credentials(dialect: str) -> tuple[str, str]:
    """A new app's client id and secret in the server's own format."""
    if dialect == "doorkeeper":
        return oauth_secret()[:43], oauth_secret()
    if dialect == "iceshrimp":  # CryptographyHelpers.GenerateRandomString(32)
        return oauth_secret()[:32], oauth_secret()[:32]
    return random_ulid(), str(uuid.uuid4())


async def create_app(request: web.Request) -> web.Response:
    state = state_of(request)
    require_accept(request, JSON_TYPE)
    managed_by: str | None = None
    auth = lookup_auth(state, bearer(request))
    if auth is not None and auth.user is not None:
        if not token_permits(auth.token.scope, "write:applications"):
            raise ApiError(403, "token has insufficient scope permission")
        managed_by = auth.user.user_id
    bound = await bind(request)
    struct = "ApplicationCreateRequest"
    name = json_string_field(bound, struct, "client_name")
    redirect_raw = json_string_field(bound, struct, "redirect_uris")
    scopes_raw = json_string_field(bound, struct, "scopes")
    website = json_string_field(bound, struct, "website") or ""
    if not name:
        raise ApiError(400, _validator(struct, "ClientName"))
    _check_len("client_name", name, 1024)
    _check_len("redirect_uris", redirect_raw or "", 2056)
    _check_len("scopes", scopes_raw or "", 1024)
    _check_len("website", website, 1024)
    redirects = [OOB_URI] if not redirect_raw else _parse_redirects(redirect_raw)
    if state.profile.oauth_dialect == "iceshrimp":
        asked = (scopes_raw or "read").split(" ")
        if len(set(asked)) < len(asked) or not set(asked) <= ICESHRIMP_SCOPES:
            raise ApiError.raw(400, "Invalid scopes parameter")
    client_id, client_secret = _client_credentials(state.profile.oauth_dialect)
    app = FakeApp(
        id=state.new_id(),
        client_id=client_id,
        client_secret=client_secret,
        name=name,
        website=website,
        redirect_uris=redirects,
        scopes=(scopes_raw or "read").split(" "),
        created_at=state.now_iso(),
        managed_by=managed_by,
    )
    state.apps[app.client_id] = app
    return json_response(app_json(app))


async def get_app(request: web.Request) -> web.Response:
    auth = token_auth(request, "read:applications")
    state = state_of(request)
    app = next((a for a in state.apps.values() if a.id == request.match_info["id"]), None)
    if app is None or auth.user is None or app.managed_by != auth.user.user_id:
        raise ApiError(404, "app not found")
    return json_response(app_json(app, sensitive=False))


# --- sessions --------------------------------------------------------------------------------------
def cookie_name(state: FakeState) -> str:
    return f"gotosocial-{state.hostname}"


def load_session(request: web.Request) -> Session:
    state = state_of(request)
    return state.load_session(request.cookies.get(cookie_name(state)))


def save_session(request: web.Request, resp: web.StreamResponse, session: Session) -> None:
    state = state_of(request)
    state.save_session(session)
    resp.set_cookie(cookie_name(state), session.id, max_age=state.session_max_age, path="/", httponly=True,
                    samesite="Lax")


def _html(text: str, status: int = 200) -> web.Response:
    resp = web.Response(status=status, text=text)
    resp.content_type = HTML_TYPE
    return resp


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def _account_redirect(user: FakeUser) -> web.Response | None:
    if not user.confirmed:
        return _redirect(303, "/auth/check_your_email")
    if not user.approved:
        return _redirect(303, "/auth/wait_for_approval")
    if user.disabled:
        return _redirect(303, "/auth/account_disabled")
    return None


# --- GET/POST /oauth/authorize, /auth/sign_in, /oauth/oob ------------------------------------------
async def authorize_get(request: web.Request) -> web.Response:
    state = state_of(request)
    require_accept(request, HTML_TYPE)
    session = load_session(request)
    user_id = session.data.get("userid", "")
    if not user_id:
        bound = await bind(request)
        missing = [
            _validator("OAuthAuthorize", go)
            for key, go in (("response_type", "ResponseType"), ("client_id", "ClientID"),
                            ("redirect_uri", "RedirectURI"))
            if not bound.first(key)
        ]
        if missing:
            raise ApiError(400, "\n".join(missing), HELPFUL_ADVICE)
        scope = (bound.first("scope") or "read").replace("+", " ")
        session.data.update({
            "force_login": bound.first("force_login") or "",
            "response_type": bound.first("response_type") or "",
            "client_id": bound.first("client_id") or "",
            "redirect_uri": bound.first("redirect_uri") or "",
            "scope": scope,
            "state": bound.first("state") or "",
        })
        resp = _redirect(303, "/auth/sign_in")
        save_session(request, resp, session)
        return resp
    client_id = session.data.get("client_id", "")
    app = state.apps.get(client_id)
    if app is None:
        session.data.clear()
        state.save_session(session)
        raise ApiError(500, f"db error getting app for clientID {client_id}", HELPFUL_ADVICE)
    user = state.user_by_id(user_id)
    if user is None:
        session.data.clear()
        state.save_session(session)
        raise ApiError(400, f"user with id {user_id} could not be retrieved", HELPFUL_ADVICE)
    redirect = _account_redirect(user)
    if redirect is not None:
        return redirect
    return _html(authorize_page(user=user.username, app_name=app.name, app_website=app.website,
                                redirect=session.data.get("redirect_uri", ""),
                                scope=session.data.get("scope", ""), banner=shows_banner(request)))


async def sign_in_get(request: web.Request) -> web.Response:
    require_accept(request, HTML_TYPE)
    return _html(sign_in_page(banner=shows_banner(request)))


async def sign_in_post(request: web.Request) -> web.Response:
    state = state_of(request)
    session = load_session(request)
    bound = await bind(request, json_allowed=False)
    email = bound.first("username") or ""
    password = bound.first("password") or ""
    user = state.user_by_email(email) if email and password else None
    if user is None or user.password != password:
        raise ApiError(401, "password/email combination was incorrect", HELPFUL_ADVICE)
    session.data["userid"] = user.user_id
    resp = _redirect(302, "/oauth/authorize")
    save_session(request, resp, session)
    return resp


async def authorize_post(request: web.Request) -> web.Response:
    state = state_of(request)
    session = load_session(request)
    data = session.data
    for key in ("response_type", "client_id", "redirect_uri", "scope", "userid"):
        if not data.get(key) and not (key == "scope" and key in data):
            raise ApiError(500, f"key {key} not found in session", HELPFUL_ADVICE)
    user = state.user_by_id(data["userid"])
    if user is None:
        raise ApiError(400, f"user with id {data['userid']} could not be retrieved", HELPFUL_ADVICE)
    redirect = _account_redirect(user)
    if redirect is not None:
        return redirect
    redirect_uri, scope, client_state = data["redirect_uri"], data["scope"], data.get("state", "")
    client_id, response_type = data["client_id"], data["response_type"]
    if redirect_uri != OOB_URI:  # the OOB page still needs the session
        data.clear()
        state.save_session(session)
    if response_type != "code":
        raise ApiError(401, HELPFUL_ADVICE)
    app = state.apps.get(client_id)
    if app is None:
        return _redirect(302, _with_query(redirect_uri, {"error": "invalid_client",
                                                         "error_description": "Client authentication failed",
                                                         "state": client_state}))
    if scopes_covered(scope, app.scopes) is not None:
        # For OOB the URN is not rewritten on errors.
        return _redirect(302, _with_query(redirect_uri, {"error": "invalid_scope",
                                                         "error_description": _INVALID_SCOPE,
                                                         "state": client_state}))
    if redirect_uri not in app.redirect_uris:
        return _redirect(302, _with_query(redirect_uri, {"error": "server_error",
                                                         "error_description": _SERVER_ERROR,
                                                         "state": client_state}))
    code = authorization_code(state.profile.code_length)
    state.codes[code] = FakeCode(code=code, client_id=app.client_id, user_id=user.user_id,
                                 redirect_uri=redirect_uri, scope=scope, created=time.monotonic())
    params = {"code": code, "state": client_state}
    if redirect_uri == OOB_URI:
        return _redirect(302, f"{state.profile.oob_path}?" + _encode(params))
    return _redirect(302, _with_query(redirect_uri, params))


def _encode(params: dict[str, str]) -> str:
    return urllib.parse.urlencode(sorted((k, v) for k, v in params.items() if v))


def _with_query(uri: str, params: dict[str, str]) -> str:
    """Go's url.Values.Encode over the existing query plus the new values (keys sorted)."""
    parts = urllib.parse.urlsplit(uri)
    existing = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    merged = existing + [(k, v) for k, v in params.items() if v]
    query = urllib.parse.urlencode(sorted(merged, key=lambda kv: kv[0]))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


async def oob_get(request: web.Request) -> web.Response:
    state = state_of(request)
    code = request.query.get("code", "")
    if not code:
        raise ApiError(400, "no 'code' query value provided in callback redirect", HELPFUL_ADVICE)
    session = load_session(request)
    user_id = session.data.get("userid")
    if user_id is None:
        raise ApiError(500, "neither userid nor userid_awaiting_2fa keys found in session", HELPFUL_ADVICE)
    scope = session.data.get("scope", "")
    user = state.user_by_id(user_id)
    if user is None:
        raise ApiError(400, f"user with id {user_id} could not be retrieved", HELPFUL_ADVICE)
    session.data.clear()
    resp = _html(oob_page(user=user.username, scope=scope, code=code, banner=shows_banner(request)))
    save_session(request, resp, session)
    return resp
