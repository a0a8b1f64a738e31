"""Cross-cutting behaviour of the fake GoToSocial: request log, faults, rate limits (§9), errors (§11).

Rate limits follow the profile: GoToSocial's one fixed window per (router group, client IP), or
Mastodon's rack-attack buckets (mastodon-family.md, "Rate limits"): per token, per user, per user for
paging, per IP unauthenticated, and app registrations per IP. A Mastodon answer's headers describe only
the most limited bucket of that request; the reset is ISO 8601 and a 429 has no Retry-After. Or
Iceshrimp.NET's limiter: 500 requests a minute per signed-in user (else per X-Forwarded-For, else per IP),
10 app registrations a minute, no streaming limit, and neither rate-limit headers nor Retry-After.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.fakes.gotosocial.core import iso_ms, iso_seconds, status_text
from tests.fakes.gotosocial.httputil import (
    EXTRA_HEADERS,
    ApiError,
    OAuthError,
    api_error_response,
    bearer,
    client_ip,
    json_response,
    lookup_auth,
    oauth_error_response,
    state_of,
)
from tests.fakes.gotosocial.state import FakeState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CLIENT_PREFIXES = ("/api/", "/auth/", "/oauth/")
_CLIENT_EXACT = ("/livez", "/readyz")
_S2S_PREFIXES = ("/.well-known/", "/nodeinfo/")


def _bucket_group(path: str) -> str | None:
    if path.startswith(_CLIENT_PREFIXES) or path in _CLIENT_EXACT:
        return "client"
    if path.startswith(_S2S_PREFIXES):
        return "s2s"
    return None


def _rate_limit(state: FakeState, request: web.Request, group: str) -> tuple[dict[str, str], bool]:
    """Fixed window per (group, client IP). Returns the headers and whether the request is over the limit."""
    key = (group, client_ip(request))
    now = state.rate_clock()
    entry = state.rate_buckets.get(key)
    if entry is None or now >= entry[0]:
        reset_at, count = now + state.rate_window, 0
    else:
        reset_at, count = entry[0], entry[1]
    count += 1
    state.rate_buckets[key] = (reset_at, count, now)
    headers = {
        "X-Ratelimit-Limit": str(state.rate_limit),
        "X-Ratelimit-Remaining": str(max(0, state.rate_limit - count)),
        "X-Ratelimit-Reset": iso_seconds(reset_at),
    }
    return headers, count > state.rate_limit


_PAGING_PARAMS = ("max_id", "since_id", "min_id", "page")


def _mastodon_buckets(state: FakeState, request: web.Request) -> list[tuple[str, str]]:
    """The rack-attack throttles a request counts in: (bucket kind, discriminator)."""
    ip = client_ip(request)
    if request.method == "POST" and request.path == "/api/v1/apps":
        return [("apps", ip), ("anonymous", ip)]
    auth = lookup_auth(state, bearer(request))
    if auth is None:
        return [("anonymous", ip)]
    buckets = [("token", auth.token.access)]
    if auth.user is not None:
        buckets.append(("user", auth.user.user_id))
        if any(key in request.query for key in _PAGING_PARAMS):
            buckets.append(("paging", auth.user.user_id))
    return buckets


def _mastodon_rate_limit(state: FakeState, request: web.Request) -> tuple[dict[str, str], bool]:
    """Count the request in every bucket it belongs to; the headers describe the most limited one."""
    now = state.rate_clock()
    tightest: tuple[int, int, float] | None = None  # (remaining, limit, reset)
    over = False
    for kind, who in _mastodon_buckets(state, request):
        remaining, limit, reset, bucket_over = state.count_in_bucket(kind, who, now)
        over = over or bucket_over
        if tightest is None or remaining < tightest[0]:
            tightest = (remaining, limit, reset)
    assert tightest is not None
    remaining, limit, reset = tightest
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": iso_ms(reset),
    }
    return headers, over


def _iceshrimp_over_limit(state: FakeState, request: web.Request) -> bool:
    """Count the request in Iceshrimp.NET's policy for it; whether it is over the limit."""
    if request.path == "/api/v1/streaming":
        return False
    auth = lookup_auth(state, bearer(request))
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    who = auth.user.user_id if auth is not None and auth.user is not None else forwarded or client_ip(request)
    strict = request.method == "POST" and request.path == "/api/v1/apps"
    kind = "iceshrimp_strict" if strict else "iceshrimp_sliding"
    return state.count_in_bucket(kind, who, state.rate_clock())[3]


async def _huge_body(request: web.Request, size: int) -> web.StreamResponse:
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    await resp.prepare(request)
    chunk = b" " * 65536
    await resp.write(b"[")
    sent = 1
    try:
        while sent < size:
            await resp.write(chunk)
            sent += len(chunk)
        await resp.write(b"]")
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client stopped reading, as it should
    return resp


def _abort(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=503)


@web.middleware
async def gts_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = state_of(request)
    state.request_log.append((request.method, request.path))
    faults = state.faults
    path = request.path
    if faults.down:
        if faults.down_status is None:
            return _abort(request)
        return json_response({"error": status_text(faults.down_status)}, faults.down_status)
    if faults.delay > 0:
        await asyncio.sleep(faults.delay)
    extra: dict[str, str] = {}
    group = _bucket_group(path)
    if group == "client" and state.profile.rate_limit_model == "mastodon_buckets":
        extra, over = _mastodon_rate_limit(state, request)
        if over:
            state.rate_limited_responses += 1
            return json_response({"error": "Too many requests"}, 429, headers=extra)
    elif group == "client" and state.profile.rate_limit_model == "iceshrimp_sliding":
        if _iceshrimp_over_limit(state, request):
            state.rate_limited_responses += 1
            body = {"statusCode": 429, "error": "Too Many Requests",
                    "requestId": f"0HN{len(state.request_log)}"}
            return json_response(body, 429)
    elif group is not None and state.rate_limit > 0:
        extra, over = _rate_limit(state, request, group)
        if over:
            state.rate_limited_responses += 1
            return json_response({"error": "rate limit reached"}, 429, headers=extra)
    if group is not None and faults.throttle:
        headers = {**extra, "Retry-After": str(faults.throttle_retry_after)}
        return json_response({"error": "server capacity exceeded"}, 429, headers=headers)
    request[EXTRA_HEADERS] = extra
    resp = await _dispatch(request, handler, path)
    if not resp.prepared:
        for name, value in extra.items():
            resp.headers[name] = value
        if path.startswith("/api/") and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
    return resp


async def _dispatch(request: web.Request, handler: Handler, path: str) -> web.StreamResponse:
    faults = state_of(request).faults
    if path in faults.status_override:
        code = faults.status_override[path]
        return json_response({"error": status_text(code)}, code)
    if path in faults.redirect_paths:
        return web.Response(status=302, headers={"Location": faults.redirect_paths[path]})
    if path in faults.huge_body_paths:
        return await _huge_body(request, faults.huge_body_size)
    if path in faults.malformed_json_paths:
        return web.Response(status=200, body=b'{"id":"01', content_type="application/json")
    try:
        response = await handler(request)
        mangle = faults.mangle_body.get(path)
        if mangle is not None and isinstance(response, web.Response) and isinstance(response.body, bytes):
            response.body = mangle(response.body)
        if path in faults.drop_after_write:
            return _abort(request)  # done here, but the client never hears back
        return response
    except ApiError as err:
        return api_error_response(request, err)
    except OAuthError as err:
        return oauth_error_response(err)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        # gin does not answer 405: an unknown method on a known path is a 404 too.
        return api_error_response(request, ApiError(404))


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    name = state_of(request).profile.server_header
    if name:
        response.headers["Server"] = name
