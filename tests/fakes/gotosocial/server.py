"""A fake GoToSocial server on loopback that behaves like GoToSocial v0.20 (see
shared/reference/gotosocial-client-api.md), or like Mastodon, Akkoma or Iceshrimp.NET with `--profile` (see
profiles.py), for tests and for trying the bot by hand:

    python -m tests.fakes.gotosocial --port 8080 --user alice:alice@example.org:Long-Strong-Passw0rd!
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import html
import re
import time
import urllib.parse
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.gotosocial import api as gts_api
from tests.fakes.gotosocial import oauth as gts_oauth
from tests.fakes.gotosocial import stream as gts_stream
from tests.fakes.gotosocial import tokens as gts_token
from tests.fakes.gotosocial import writes as gts_writes
from tests.fakes.gotosocial.core import OOB_URI, oauth_secret
from tests.fakes.gotosocial.hostile import Hostile
from tests.fakes.gotosocial.httputil import STATE
from tests.fakes.gotosocial.middleware import gts_middleware, server_header
from tests.fakes.gotosocial.profiles import GOTOSOCIAL, PROFILES, Profile, profile_named
from tests.fakes.gotosocial.state import (
    FakeApp,
    FakeCode,
    FakeState,
    FakeToken,
    FakeUser,
    FaultKnobs,
    StoredNotification,
)

__all__ = [
    "AuthorizeError",
    "FakeApp",
    "FakeCode",
    "FakeGoToSocial",
    "FakeToken",
    "FakeUser",
    "FaultKnobs",
    "Profile",
    "StoredNotification",
]

_OOB_CODE = re.compile(r'<section class="oob-token">.*?<code>(.*?)</code>', re.DOTALL)


class AuthorizeError(Exception):
    """The browser flow did not end with a code. Carries what a person would have seen (no secrets)."""

    def __init__(self, step: str, status: int, detail: str, *, error: str | None = None,
                 error_description: str | None = None) -> None:
        super().__init__(f"{step}: HTTP {status}: {detail}")
        self.step = step
        self.status = status
        self.error = error
        self.error_description = error_description


class FakeGoToSocial:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = 0,
        profile: Profile = GOTOSOCIAL,
        code_ttl: float | None = None,
        ping_interval: float = 30.0,
        account_domain: str | None = None,
        rate_window: float = 300.0,
        session_max_age: int = 120,
        id_start: int | None = None,
        hostile: bool = False,
    ) -> None:
        """``profile`` chooses the server imitated (see ``profiles.py``); ``id_start`` makes numeric ids a
        plain counter (to cross digit counts); ``code_ttl`` overrides the profile's code lifetime.
        ``hostile=True`` adds ``self.hostile``, the hostile-instance profile (``hostile.py``)."""
        self._bind_host = host
        self._bind_port = port
        self.state = FakeState(
            profile=profile, account_domain=account_domain,
            code_ttl=profile.code_ttl if code_ttl is None else code_ttl,
            rate_limit=rate_limit, rate_window=rate_window, ping_interval=ping_interval,
            session_max_age=session_max_age, id_start=id_start,
        )
        self.hostile: Hostile | None = Hostile(self) if hostile else None
        self._runner: web.AppRunner | None = None
        self._stream_runner: web.AppRunner | None = None
        self.base_url = ""
        self.host = ""
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[gts_middleware])
        app[STATE] = self.state
        app.on_response_prepare.append(server_header)
        r = app.router  # gin answers HEAD only where a route asks for it (the health checks)
        r.add_post("/api/v1/apps", gts_oauth.create_app)
        r.add_get("/api/v1/apps/{id}", gts_oauth.get_app, allow_head=False)
        r.add_get("/oauth/authorize", gts_oauth.authorize_get, allow_head=False)
        r.add_post("/oauth/authorize", gts_oauth.authorize_post)
        r.add_get("/auth/sign_in", gts_oauth.sign_in_get, allow_head=False)
        r.add_post("/auth/sign_in", gts_oauth.sign_in_post)
        r.add_get("/oauth/oob", gts_oauth.oob_get, allow_head=False)
        if self.state.profile.oob_path != "/oauth/oob":  # Mastodon: /oauth/authorize/native
            r.add_get(self.state.profile.oob_path, gts_oauth.oob_get, allow_head=False)
        r.add_post("/oauth/token", gts_token.token)
        r.add_post("/oauth/revoke", gts_token.revoke)
        r.add_get("/api/v1/accounts/verify_credentials", gts_api.verify_credentials, allow_head=False)
        r.add_get("/api/v1/notifications", gts_api.list_notifications, allow_head=False)
        r.add_post("/api/v1/notifications/clear", gts_api.clear_notifications)
        r.add_get("/api/v1/notifications/{id}", gts_api.get_notification, allow_head=False)
        separate = self.state.profile.separate_streaming_host
        r.add_get("/api/v1/streaming", gts_stream.streaming_redirect if separate else gts_stream.streaming,
                  allow_head=False)
        r.add_get("/api/v1/instance", gts_api.get_instance_v1, allow_head=False)
        r.add_get("/api/v2/instance", gts_api.get_instance_v2, allow_head=False)
        r.add_get("/.well-known/nodeinfo", gts_api.get_nodeinfo_links, allow_head=False)
        r.add_get("/nodeinfo/{schema}", gts_api.get_nodeinfo, allow_head=False)
        r.add_get("/livez", gts_api.health)
        r.add_get("/readyz", gts_api.health)
        gts_writes.add_routes(r)
        return app

    def _make_stream_app(self) -> web.Application:
        """The separate streaming server of a profile that has one (Mastodon's streaming host)."""
        app = web.Application(middlewares=[gts_middleware])
        app[STATE] = self.state
        app.on_response_prepare.append(server_header)
        app.router.add_get("/api/v1/streaming", gts_stream.streaming, allow_head=False)
        return app

    def route_table(self) -> list[tuple[str, str]]:
        """(method, path template) of every route the fake serves (HEAD included where aiohttp adds it)."""
        out: set[tuple[str, str]] = set()
        for route in self._make_app().router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = str(info.get("path") or info.get("formatter") or "")
            out.add((route.method, path))
        return sorted(out)

    async def start(self) -> None:
        runner = await self._serve(self._make_app(), self._bind_port)
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        name = f"[{self._bind_host}]" if ":" in self._bind_host else self._bind_host
        self.host = f"{name}:{self.port}"
        self.base_url = f"http://{self.host}"
        self.state.host = self.host
        self.state.base_url = self.base_url
        if self.state.profile.separate_streaming_host:
            self._stream_runner = await self._serve(self._make_stream_app(), 0)
            self.state.streaming_host = f"{name}:{int(self._stream_runner.addresses[0][1])}"

    async def _serve(self, app: web.Application, port: int) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, self._bind_host, port).start()
        return runner

    async def stop(self) -> None:
        self.state.drop_streams()
        for runner in (self._stream_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._stream_runner = None

    async def __aenter__(self) -> FakeGoToSocial:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # --- knobs and inspection ----------------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        return self.state.profile

    @property
    def streaming_base_url(self) -> str:
        """Where streaming really is: ``ws://`` + the streaming host (the web host unless separate)."""
        return "ws://" + (self.state.streaming_host or self.host)

    @property
    def faults(self) -> FaultKnobs:
        return self.state.faults

    @property
    def request_log(self) -> list[tuple[str, str]]:
        return self.state.request_log

    @property
    def apps(self) -> dict[str, FakeApp]:
        """Registered apps by client_id."""
        return self.state.apps

    @property
    def codes(self) -> dict[str, FakeCode]:
        """Authorization codes not yet exchanged."""
        return self.state.codes

    @property
    def tokens(self) -> dict[str, FakeToken]:
        """Live access tokens by token string."""
        return self.state.tokens

    @property
    def rate_limit(self) -> int:
        return self.state.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: int) -> None:
        self.state.rate_limit = value
        self.state.rate_buckets.clear()

    def spend_rate_budget(self, kind: str, count: int, who: str = "127.0.0.1") -> None:
        """Count ``count`` requests in a Mastodon bucket (``apps``, ``anonymous``: ``who`` is an IP;
        ``token``: the token; ``user``, ``paging``: a user id), as if someone else had made them."""
        self.state.count_in_bucket(kind, who, self.state.rate_clock(), count)

    def served_over_rest(self, notification_id: str) -> bool:
        """Whether any `GET /api/v1/notifications` page has returned this notification."""
        return notification_id in self.state.served_over_rest

    @property
    def rate_limited_responses(self) -> int:
        """How many 429s the fake sent because a rate-limit budget was spent."""
        return self.state.rate_limited_responses

    def requests_to(self, path: str, method: str | None = None) -> int:
        return sum(1 for m, p in self.state.request_log if p == path and (method is None or m == method))

    def add_user(self, username: str, email: str | None = None, password: str = "Long-Strong-Passw0rd!", *,
                 locked: bool = True) -> FakeUser:
        return self.state.add_user(username, email or f"{username}@example.org", password, locked=locked)

    def user(self, username: str) -> FakeUser:
        return self.state.users[username]

    def active_tokens(self, username: str) -> list[str]:
        user = self.state.users[username]
        return [t.access for t in self.state.tokens.values()
                if t.user_id == user.user_id and self.state.live_token(t.access) is not None]

    def token_scope(self, access: str) -> str | None:
        tok = self.state.tokens.get(access)
        return None if tok is None else tok.scope

    def issue_token(self, username: str, scope: str = "read", *, client_id: str | None = None) -> str:
        """A user token without the browser flow (registers a throwaway app when none is given)."""
        user = self.state.users[username]
        if client_id is None:
            app = FakeApp(id=self.state.new_id(), client_id=self.state.new_id(), client_secret=oauth_secret(),
                          name="issued", website="", redirect_uris=[OOB_URI], scopes=scope.split(" "),
                          created_at=self.state.now_iso())
            self.state.apps[app.client_id] = app
            client_id = app.client_id
        tok = FakeToken(id=self.state.new_id(), access=oauth_secret(), client_id=client_id,
                        user_id=user.user_id, scope=scope, created_at=int(time.time()))
        self.state.tokens[tok.access] = tok
        return tok.access

    def revoke_all(self, username: str) -> int:
        return self.state.revoke_all(username)

    def delete_app(self, client_id: str) -> None:
        """Like DELETE /api/v1/apps/:id: the app's tokens stop working."""
        self.state.apps.pop(client_id, None)
        for access in [k for k, t in self.state.tokens.items() if t.client_id == client_id]:
            self.state.forget_token(access)

    def age_codes(self, seconds: float) -> None:
        """Pretend every pending code was issued ``seconds`` earlier."""
        for code in self.state.codes.values():
            code.created -= seconds

    def expire_sessions(self) -> None:
        self.state.sessions.clear()

    def pages_while_streaming(self, username: str) -> int:
        """Notification pages answered to the user while a stream of theirs was open: once the relay's
        catch-up after opening its stream is answered, a new notification can only come over the stream."""
        return self.state.pages_while_streaming.get(self.state.users[username].user_id, 0)

    def open_streams(self, username: str | None = None) -> int:
        if username is None:
            return len(self.state.streams)
        user_id = self.state.users[username].user_id
        return sum(1 for c in self.state.streams if c.user_id == user_id)

    def drop_streams(self) -> int:
        return self.state.drop_streams()

    def notifications(self, username: str) -> list[dict[str, Any]]:
        """The user's notifications, newest first."""
        user_id = self.state.users[username].user_id
        return [n.body for n in reversed(self.state.notifications) if n.user_id == user_id]

    def notify(self, username: str, type: str, from_username: str, *, status_text: str | None = None,
               spoiler_text: str = "", status_html: str | None = None) -> dict[str, Any]:
        """Create a notification (like the server does on a follow/mention/...) and push it to streams.
        ``from_username`` may be ``name@remote.example`` for a remote account."""
        return gts_api.create_notification(self.state, username, type, from_username, status_text=status_text,
                                           spoiler_text=spoiler_text, status_html=status_html)

    # --- writes (issue 12) -------------------------------------------------------------------------------
    @property
    def write_calls(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, body fields) of every call to a write endpoint, refused ones included."""
        return self.state.writes.calls

    def seed_status(self, author: str, text: str, *, visibility: str = "public", spoiler_text: str = "",
                    in_reply_to_id: str | None = None) -> dict[str, Any]:
        """A status by `author` (a local username or ``name@remote.example``); ``@acct`` words in the text
        become its mentions, as on the server. Returns its JSON."""
        parent = self.state.writes.statuses[in_reply_to_id] if in_reply_to_id else None
        stored = gts_writes.store_status(self.state, self.state.ensure_account(author), text,
                                         visibility=visibility, spoiler_text=spoiler_text, in_reply_to=parent)
        return stored.body

    def seed_follow_request(self, username: str, from_acct: str) -> str:
        """A pending request from `from_acct` to follow local `username`; returns the requester's id."""
        requester = self.state.ensure_account(from_acct)
        gts_writes.add_follow_request(self.state, self.user(username), requester)
        return requester.account_id

    def pending_follow_requests(self, username: str) -> list[str]:
        return list(self.state.writes.follow_requests.get(self.user(username).account_id, []))

    def followers(self, username: str) -> set[str]:
        return set(self.state.writes.followers.get(self.user(username).account_id, set()))

    def posted_statuses(self, username: str) -> list[dict[str, Any]]:
        """The statuses `username` has posted (or that were seeded as theirs), oldest first."""
        account_id = self.user(username).account_id
        return [s.body for s in self.state.writes.statuses.values() if s.author_account_id == account_id]

    def favourited(self, username: str, status_id: str) -> bool:
        return (self.user(username).account_id, status_id) in self.state.writes.favourites

    def reblogged(self, username: str, status_id: str) -> bool:
        return (self.user(username).account_id, status_id) in self.state.writes.reblogs

    # --- the browser flow ----------------------------------------------------------------------------
    async def authorize(self, authorize_url: str, email: str, password: str) -> str:
        """Sign in and press Allow like a person, then copy the code from the OOB page."""
        # aiohttp, not httpx: httpx raises on a `Location: urn:ietf:...` redirect even when not following it.
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies set by an IP-address host
        async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=10)) as browser:
            return await _browser_flow(browser, self.base_url, authorize_url, email, password)


async def _browser_flow(browser: aiohttp.ClientSession, base: str, authorize_url: str, email: str,
                        password: str) -> str:
    headers = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

    async def step(name: str, method: str, url: str, expect: int, **kw: Any) -> tuple[str, str]:
        async with browser.request(method, urllib.parse.urljoin(base, url), headers=headers,
                                   allow_redirects=False, **kw) as r:
            text = await r.text()
            if r.status != expect:
                raise AuthorizeError(name, r.status, text[:300])
            return r.headers.get("Location", ""), text

    location, _ = await step("GET /oauth/authorize", "GET", authorize_url, 303)
    await step("GET /auth/sign_in", "GET", location, 200)
    form = {"username": email, "password": password}
    location, _ = await step("POST /auth/sign_in", "POST", "/auth/sign_in", 302, data=form)
    await step("GET /oauth/authorize (signed in)", "GET", location, 200)
    location, _ = await step("POST /oauth/authorize", "POST", "/oauth/authorize", 302)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    if "error" in query:
        error, desc = query["error"][0], query.get("error_description", [""])[0]
        raise AuthorizeError("POST /oauth/authorize", 302, f"redirected with error={error}: {desc}",
                             error=error, error_description=desc)
    if not location.startswith("/"):
        return query["code"][0]  # a real redirect_uri: the code is in the redirect
    _, page = await step("GET the out-of-band page", "GET", location, 200)
    match = _OOB_CODE.search(page)
    if match is None:
        raise AuthorizeError("GET /oauth/oob", 200, "no oob-token section on the page")
    return html.unescape(match.group(1)).strip()


# --- running by hand --------------------------------------------------------------------------------
def _parse_user(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected name:email:password")
    return parts[0], parts[1], parts[2]


async def _serve(args: argparse.Namespace) -> None:
    profile = profile_named(args.profile)
    if args.version is not None:
        profile = dataclasses.replace(profile, version=args.version)
    gts = FakeGoToSocial(host=args.host, port=args.port, rate_limit=args.rate_limit, profile=profile,
                         ping_interval=args.ping_interval)
    for name, email, password in args.user:
        gts.add_user(name, email, password)
    await gts.start()
    print(f"fake {profile.name} listening on {gts.base_url}", flush=True)
    try:
        while True:
            await asyncio.sleep(args.notify_every or 3600)
            if args.notify_every:
                for name, _email, _pw in args.user:
                    gts.notify(name, "mention", "someone@remote.example", status_text="ping from the fake")
    finally:
        await gts.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.gotosocial", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--user", type=_parse_user, action="append", default=[], help="name:email:password")
    p.add_argument("--rate-limit", type=int, default=0)
    p.add_argument("--profile", default="gotosocial", choices=sorted(PROFILES))
    p.add_argument("--version", default=None, help="override the profile's version string")
    p.add_argument("--ping-interval", type=float, default=30.0)
    p.add_argument("--notify-every", type=float, default=0.0, help="seconds between mention notifications")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
