"""POST /oauth/token and POST /oauth/revoke of the fake GoToSocial (§3, §4 of the reference)."""

from __future__ import annotations

import time

from aiohttp import web

from tests.fakes.gotosocial.core import HELPFUL_ADVICE, HELPFUL_ADVICE_GRANT, oauth_secret, scopes_covered
from tests.fakes.gotosocial.httputil import (
    JSON_TYPE,
    ApiError,
    Bound,
    OAuthError,
    bind,
    go_kind,
    json_response,
    require_accept,
    state_of,
)
from tests.fakes.gotosocial.state import FakeApp, FakeState, FakeToken

_NO_ROWS = "sql: no rows in result set"
_NOT_YOURS = "You are not authorized to revoke this token"
_FIELDS = ("grant_type", "code", "redirect_uri", "client_id", "client_secret", "scope")
# Doorkeeper's description of invalid_client; Iceshrimp.NET answers it as the `error` of a 401.
_ICESHRIMP_UNKNOWN = (
    "Client authentication failed due to unknown client, no client authentication included, or unsupported "
    "authentication method."
)
_MASTODON_INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used "
    "in the authorization request, or was issued to another client."
)


async def _bind_token_form(request: web.Request) -> dict[str, str]:
    """The forwarded fields that are *present* (pointer fields: an empty value counts as set)."""
    try:
        bound = await bind(request)
    except ApiError as exc:
        raise OAuthError(400, "invalid_request", exc.text.split(": ", 1)[1]) from None
    out: dict[str, str] = {}
    for key in _FIELDS:
        if bound.kind == "json":
            value = bound.json.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise OAuthError(400, "invalid_request",
                                 f"json: cannot unmarshal {go_kind(value)} into Go struct field "
                                 f"tokenRequestForm.{key} of type string")
            out[key] = value
        elif bound.has(key):
            out[key] = bound.first(key) or ""
    return out


def _precheck(form: dict[str, str]) -> None:
    grant = form.get("grant_type", "")
    help_: list[str] = []
    if "grant_type" not in form:
        help_.append("grant_type was not set in the token request form, but must be set to "
                     "authorization_code "
                     "or client_credentials")
    for key in ("client_id", "client_secret", "redirect_uri"):
        if key not in form:
            help_.append(f"{key} was not set in the token request form")
    if "code" in form:
        if grant != "authorization_code":
            help_.append("a code was provided in the token request form, but grant_type was not set to "
                         "authorization_code")
    elif grant == "authorization_code":
        help_.append("code was not set in the token request form, but must be set since grant_type is "
                     "authorization_code")
    if help_:
        raise OAuthError(400, "invalid_request", *help_)


def _token_body(token: FakeToken, *, expires_in: int | None) -> dict[str, object]:
    body: dict[str, object] = {"access_token": token.access, "created_at": token.created_at}
    if expires_in is not None:
        body["expires_in"] = expires_in
    body["scope"] = token.scope
    body["token_type"] = "Bearer"
    return body


def _lookup_app(state: FakeState, client_id: str) -> FakeApp:
    app = state.apps.get(client_id)
    if app is None:
        raise OAuthError(400, _NO_ROWS, f"could not get access token: {_NO_ROWS}", HELPFUL_ADVICE)
    return app


def _check_client(app: FakeApp, form: dict[str, str]) -> None:
    if form["client_secret"] != app.client_secret:
        raise OAuthError(400, "invalid_client", "could not get access token: invalid_client", HELPFUL_ADVICE)
    redirect = form["redirect_uri"]
    if redirect and redirect not in app.redirect_uris:
        raise OAuthError(403, "invalid redirect uri",
                         f"requested redirect URI {redirect} was not covered by client redirect URIs",
                         HELPFUL_ADVICE)


def _invalid_grant(state: FakeState) -> OAuthError:
    if state.profile.oauth_dialect == "doorkeeper":
        err = OAuthError(400, "invalid_grant")
        err.description = _MASTODON_INVALID_GRANT
        return err
    return OAuthError(400, "invalid_grant", "could not get access token: invalid_grant", HELPFUL_ADVICE)


async def token(request: web.Request) -> web.Response:
    state = state_of(request)
    require_accept(request, JSON_TYPE)
    form = await _bind_token_form(request)
    if state.profile.oauth_dialect == "iceshrimp":
        return _iceshrimp_token(state, form)
    _precheck(form)
    grant = form["grant_type"]
    if grant not in ("authorization_code", "client_credentials"):
        raise OAuthError(400, "unsupported_grant_type",
                         "could not validate token request: unsupported_grant_type",
                         HELPFUL_ADVICE_GRANT)
    if not form["client_id"]:
        raise OAuthError(400, "invalid_client", "could not validate token request: invalid_client",
                         HELPFUL_ADVICE)
    now = int(time.time())
    if grant == "client_credentials":
        app = _lookup_app(state, form["client_id"])
        scope = form.get("scope") or "read"
        uncovered = scopes_covered(scope, app.scopes)
        if uncovered is not None:
            raise OAuthError(403, "invalid_scope",
                             f"requested scope {uncovered} was not covered by client scope", HELPFUL_ADVICE)
        _check_client(app, form)
        tok = FakeToken(id=state.new_id(), access=oauth_secret(), client_id=app.client_id, user_id=None,
                        scope=scope, created_at=now, expires_at=time.monotonic() + 3600)
        state.tokens[tok.access] = tok
        return _no_store(json_response(_token_body(tok, expires_in=7200)))
    if not form["redirect_uri"] or not form["code"]:
        raise OAuthError(400, "invalid_request", "could not validate token request: invalid_request",
                         HELPFUL_ADVICE)
    app = _lookup_app(state, form["client_id"])
    _check_client(app, form)
    code = state.codes.get(form["code"])
    if code is None:
        if state.profile.oauth_dialect == "doorkeeper":
            raise _invalid_grant(state)
        raise OAuthError(400, _NO_ROWS, f"could not get access token: {_NO_ROWS}", HELPFUL_ADVICE)
    if (
        code.client_id != app.client_id
        or code.redirect_uri != form["redirect_uri"]
        or time.monotonic() - code.created > state.code_ttl
    ):
        raise _invalid_grant(state)
    del state.codes[form["code"]]
    reused = _reusable_token(state, app.client_id, code.user_id, code.scope)
    if reused is not None:
        return _no_store(json_response(_token_body(reused, expires_in=None)))
    tok = FakeToken(id=state.new_id(), access=oauth_secret(), client_id=app.client_id, user_id=code.user_id,
                    scope=code.scope, created_at=now)
    state.tokens[tok.access] = tok
    return _no_store(json_response(_token_body(tok, expires_in=None)))


def _iceshrimp_error(status: int, message: str) -> OAuthError:
    """Iceshrimp.NET's MastodonErrorResponse: the message as `error`, `error_description` null."""
    err = OAuthError(status, message)
    err.description = None
    return err


def _iceshrimp_token(state: FakeState, form: dict[str, str]) -> web.Response:
    """Iceshrimp.NET's GetOauthToken (Controllers/Mastodon/AuthController.cs): only authorization_code;
    the code row is looked up together with client_id and client_secret (401 when none matches, so an
    unknown code and an unknown client read the same); a redeemed code is refused with 400; codes do not
    expire and the redirect URI is not compared. A request without `scope` asks for `read` (the default of
    its OauthTokenRequest), which must be among the granted scopes and becomes the token's."""
    if form.get("grant_type") != "authorization_code":
        raise _iceshrimp_error(400, "Invalid grant_type")
    code = state.codes.get(form.get("code", ""))
    app = state.apps.get(form.get("client_id", ""))
    if code is None or app is None or code.client_id != app.client_id or (
        app.client_secret != form.get("client_secret")
    ):
        raise _iceshrimp_error(401, _ICESHRIMP_UNKNOWN)
    if code.used:
        raise _iceshrimp_error(400, _MASTODON_INVALID_GRANT)
    requested = form.get("scope") or "read"  # AuthSchemas.OauthTokenRequest: Scopes = ["read"] unless sent
    if scopes_covered(requested, code.scope.split()) is not None:
        raise _iceshrimp_error(400, "The requested scope is invalid, unknown, or malformed.")
    code.used = True
    tok = FakeToken(id=state.new_id(), access=oauth_secret(), client_id=app.client_id, user_id=code.user_id,
                    scope=requested, created_at=int(time.time()))
    state.tokens[tok.access] = tok
    return json_response(_token_body(tok, expires_in=None))


def _reusable_token(state: FakeState, client_id: str, user_id: str, scope: str) -> FakeToken | None:
    """Doorkeeper's `reuse_access_token` (Mastodon) and Akkoma's `maybe_reuse_token`: the same account,
    app and scopes get the live token they already have."""
    if not state.profile.reuses_tokens:
        return None
    wanted = set(scope.split())
    return next(
        (t for t in state.tokens.values()
         if t.client_id == client_id and t.user_id == user_id and set(t.scope.split()) == wanted
         and state.live_token(t.access) is not None),
        None,
    )


def _no_store(resp: web.Response) -> web.Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


async def revoke(request: web.Request) -> web.Response:
    state = state_of(request)
    if not state.faults.revoke_enabled:
        raise ApiError(404)
    require_accept(request, JSON_TYPE)
    # The request struct has only `form` tags: a JSON body binds nothing.
    if request.content_type == JSON_TYPE:
        bound = Bound("form", {}, {})
    else:
        bound = await bind(request, json_allowed=False)
    values = {k: bound.first(k) or "" for k in ("client_id", "client_secret", "token")}
    for key, value in values.items():
        if not value:
            raise OAuthError(400, "invalid_request", f"{key} not set")
    tok = state.tokens.get(values["token"])
    if tok is None:
        status = state.profile.revoke_unknown_token_status  # Iceshrimp.NET: 403; GtS, Doorkeeper: 200 {}
        if state.profile.oauth_dialect == "iceshrimp":
            return json_response({"error": _NOT_YOURS, "error_description": None}, status)
        if status != 200:
            return json_response({"error": "unauthorized_client", "error_description": _NOT_YOURS}, status)
        return json_response({})
    app = state.apps.get(tok.client_id)
    if tok.client_id != values["client_id"] or app is None or app.client_secret != values["client_secret"]:
        if state.profile.oauth_dialect == "iceshrimp":  # the same lookup as for an unknown token
            return json_response({"error": _NOT_YOURS, "error_description": None}, 403)
        if state.profile.oauth_dialect == "doorkeeper":
            return json_response({"error": "unauthorized_client", "error_description": _NOT_YOURS}, 403)
        raise OAuthError(403, "unauthorized_client", _NOT_YOURS)
    state.forget_token(values["token"])
    return json_response({})
