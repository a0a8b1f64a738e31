"""HTTP plumbing shared by the fake's handlers: errors, negotiation, form binding, token auth."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.gotosocial.core import go_json, negotiate, safe_text, token_permits
from tests.fakes.gotosocial.render import error_page
from tests.fakes.gotosocial.state import FakeApp, FakeState, FakeToken, FakeUser

STATE: web.AppKey[FakeState] = web.AppKey("gts_state", FakeState)
EXTRA_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("gts_extra_headers", dict)
JSON_TYPE = "application/json"
HTML_TYPE = "text/html"
TRUSTED_PROXIES = ("127.0.0.1", "::1")


class ApiError(Exception):
    """A client-API error: ``{"error": "<StatusText>: help..."}`` (JSON, or HTML when preferred)."""

    def __init__(self, status: int, *helps: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.text = safe_text(status, *helps)
        self.headers = headers or {}

    @classmethod
    def raw(cls, status: int, text: str) -> ApiError:
        """An error whose text is exactly `text` (Mastodon's bodies carry no status-text prefix)."""
        err = cls(status)
        err.text = text
        return err


class OAuthError(Exception):
    """An OAuth endpoint error: ``{"error": E, "error_description": "<StatusText>: ..."}``."""

    def __init__(self, status: int, error: str, *helps: str) -> None:
        super().__init__(status)
        self.status = status
        self.error = error
        self.description: str | None = safe_text(status, *helps)  # None: Iceshrimp.NET's null


def state_of(request: web.Request) -> FakeState:
    return request.app[STATE]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = JSON_TYPE) -> web.Response:
    resp = web.Response(status=status, body=go_json(body).encode(), headers=headers)
    resp.content_type = content_type
    return resp


def client_ip(request: web.Request) -> str:
    """gin's ClientIP with trusted proxies 127.0.0.1/32 and ::1."""
    remote = request.remote or ""
    if remote not in TRUSTED_PROXIES:
        return remote
    xff = request.headers.get("X-Forwarded-For")
    if xff:
        items = [p.strip() for p in xff.split(",") if p.strip()]
        for item in reversed(items):
            if item not in TRUSTED_PROXIES:
                return _valid_ip(item) or remote
        if items:
            return items[0]
    real = request.headers.get("X-Real-IP")
    if real and _valid_ip(real.strip()):
        return real.strip()
    return remote


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def shows_banner(request: web.Request) -> bool:
    return state_of(request).rate_limit > 0 and client_ip(request) == "127.0.0.1"


def prefers_html(request: web.Request) -> bool:
    return negotiate(request.headers.getall("Accept", []), [JSON_TYPE, HTML_TYPE]) == HTML_TYPE


def api_error_response(request: web.Request, err: ApiError) -> web.Response:
    if prefers_html(request):
        text = error_page(err.status, err.text, banner=shows_banner(request))
        resp = web.Response(status=err.status, text=text, headers=err.headers)
        resp.content_type = HTML_TYPE
        return resp
    return json_response({"error": err.text}, err.status, headers=err.headers)


def oauth_error_response(err: OAuthError) -> web.Response:
    return json_response({"error": err.error, "error_description": err.description}, err.status)


def require_accept(request: web.Request, offer: str) -> None:
    accepts = request.headers.getall("Accept", [])
    if negotiate(accepts, [offer]) is None:
        shown = "[" + " ".join(accepts) + "]"
        raise ApiError(406, f"no format can be offered for requested Accept header(s) {shown}; "
                            f"this endpoint offers [{offer}]")


# --- binding ---------------------------------------------------------------------------------------
@dataclass
class Bound:
    """Request parameters as gin's ShouldBind sees them."""

    kind: str  # "json" | "form"
    form: dict[str, list[str]]
    json: dict[str, Any]

    def has(self, key: str) -> bool:
        if self.kind == "json":
            return self.json.get(key) is not None
        return key in self.form

    def first(self, key: str) -> str | None:
        if self.kind == "json":
            value = self.json.get(key)
            return None if value is None else str(value)
        values = self.form.get(key)
        return values[0] if values else None

    def all(self, key: str) -> list[str]:
        return list(self.form.get(key, [])) if self.kind == "form" else []


async def bind(request: web.Request, *, json_allowed: bool = True) -> Bound:
    """JSON body for application/json (when the handler binds JSON), else body form values then query."""
    ctype = request.content_type
    if request.method in ("POST", "PUT", "PATCH") and ctype == JSON_TYPE and json_allowed:
        raw = await request.read()
        text = raw.decode("utf-8", "replace")
        stripped = text.strip()
        if not stripped:
            raise ApiError(400, "EOF")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"invalid character {stripped[exc.pos:exc.pos + 1]!r} looking for beginning "
                                "of value") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"json: cannot unmarshal {go_kind(data)} into Go value of type struct")
        return Bound("json", {}, data)
    form: dict[str, list[str]] = {}
    if request.method in ("POST", "PUT", "PATCH") and ctype in (
        "application/x-www-form-urlencoded", "multipart/form-data"
    ):
        post = await request.post()
        for key, value in post.items():
            if isinstance(value, str):
                form.setdefault(key, []).append(value)
    for key, value in request.query.items():
        form.setdefault(key, []).append(value)
    return Bound("form", form, {})


def go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def json_string_field(bound: Bound, struct: str, key: str) -> str | None:
    """A string field of a Go struct bound from JSON: wrong JSON types give Go's unmarshal error."""
    if bound.kind != "json":
        return bound.first(key)
    value = bound.json.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"json: cannot unmarshal {go_kind(value)} into Go struct field {struct}.{key} "
                            "of type string")
    return value


# --- auth ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Auth:
    token: FakeToken
    app: FakeApp
    user: FakeUser | None


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        value = header[len("Bearer "):].strip()
        return value or None
    return None


def lookup_auth(state: FakeState, access: str | None) -> Auth | None:
    if access is None:
        return None
    tok = state.live_token(access)
    if tok is None:
        return None
    user = state.user_by_id(tok.user_id) if tok.user_id else None
    if user is not None and (not user.confirmed or not user.approved or user.disabled):
        return None  # the token middleware drops such tokens silently
    return Auth(tok, state.apps[tok.client_id], user)


# Mastodon's `require_user!` (app/controllers/api/base_controller.rb) for a login that cannot be used.
_MASTODON_LOGIN_ERRORS = (
    (lambda u: not u.confirmed, "Your login is missing a confirmed e-mail address"),
    (lambda u: not u.approved, "Your login is currently pending approval"),
    (lambda u: u.disabled, "Your login is currently disabled"),
)


def _inactive_login(state: FakeState, access: str | None) -> str | None:
    """Mastodon's 403 text when the token is live but its user cannot use it (GtS drops such tokens)."""
    tok = state.live_token(access) if access is not None else None
    user = state.user_by_id(tok.user_id) if tok is not None and tok.user_id else None
    if user is None or state.profile.inactive_login_status != 403:
        return None
    return next((text for check, text in _MASTODON_LOGIN_ERRORS if check(user)), None)


def token_auth(request: web.Request, *scopes: str, require_user: bool = True) -> Auth:
    """GoToSocial's TokenAuth: 401 texts first, then the scope check."""
    state = state_of(request)
    auth = lookup_auth(state, bearer(request))
    if auth is None:
        login_error = _inactive_login(state, bearer(request))
        if login_error is not None:
            raise ApiError.raw(403, login_error)
        raise ApiError(401, "token not supplied")
    if require_user and auth.user is None:
        raise ApiError(401, "user not supplied or not authorized")
    if scopes and not token_permits(auth.token.scope, *scopes):
        raise ApiError(403, "token has insufficient scope permission")
    return auth
