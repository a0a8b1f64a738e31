"""Pins the fake GoToSocial to the reference (shared/reference/gotosocial-client-api.md), over raw HTTP:
apps, the browser flow, tokens, revoke, scopes and notifications (§1-§7)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.fakes.gotosocial import AuthorizeError, FakeGoToSocial
from tests.fakes.gotosocial.core import HELPFUL_ADVICE
from tests.fakes.gotosocial.testkit import (
    NO_TOKEN,
    OOB,
    PW,
    SCOPE_403,
    SECRET_RE,
    ULID_RE,
    UUID4_RE,
    authorize_url,
    bearer,
    login,
    register,
    token_form,
)


@pytest.fixture
async def gts() -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial(ping_interval=0.2) as server:
        server.add_user("alice")
        server.add_user("bob")
        yield server


@pytest.fixture
async def http(gts: FakeGoToSocial) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gts.base_url) as client:
        yield client


# --- §1 apps -----------------------------------------------------------------------------------------
async def test_apps_response_fields_and_formats(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v1/apps", json={"client_name": "bot", "scopes": "read follow  bogus"})
    body = r.json()
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert ULID_RE.match(body["client_id"])
    assert ULID_RE.match(body["id"])
    assert UUID4_RE.match(body["client_secret"])
    assert body["scopes"] == ["read", "follow", "", "bogus"]
    assert body["redirect_uri"] == OOB
    assert body["redirect_uris"] == [OOB]
    assert "website" not in body
    r = await http.post("/api/v1/apps?client_name=x&website=https://example.org")
    assert r.status_code == 200
    assert r.json()["website"] == "https://example.org"
    assert r.json()["scopes"] == ["read"]
    r = await http.post(
        "/api/v1/apps",
        files={"client_name": (None, "m"), "redirect_uris": (None, "https://a/x\nhttps://b/y")},
    )
    assert r.json()["redirect_uris"] == ["https://a/x", "https://b/y"]
    assert r.json()["redirect_uri"] == "https://a/x\nhttps://b/y"


async def test_apps_errors(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v1/apps", data={"scopes": "read"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "Bad Request: Key: 'ApplicationCreateRequest.ClientName' Error:Field validation "
        "for 'ClientName' failed on the 'required' tag"
    }
    r = await http.post("/api/v1/apps", json={"client_name": "x", "redirect_uris": [OOB]})
    assert r.json() == {
        "error": "Bad Request: json: cannot unmarshal array into Go struct field "
        "ApplicationCreateRequest.redirect_uris of type string"
    }
    r = await http.post("/api/v1/apps", data={"client_name": "x", "redirect_uris": " \n "})
    assert r.json() == {"error": "Bad Request: no redirect URIs left after trimming space"}
    r = await http.post("/api/v1/apps", data={"client_name": "x"}, headers={"Accept": "text/html"})
    assert r.status_code == 406
    assert r.headers["content-type"].startswith("text/html")


# --- §2 browser flow ---------------------------------------------------------------------------------
async def test_browser_flow_step_by_step(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app = await register(http)
    r = await http.get(
        authorize_url(gts, app, "read+write", state="s1").replace("read%2Bwrite", "read+write")
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/auth/sign_in"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("gotosocial-127.0.0.1=")
    assert "Max-Age=120" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie
    r = await http.get("/auth/sign_in")
    assert r.status_code == 200
    assert 'name="username"' in r.text
    assert 'action="/auth/sign_in"' in r.text
    r = await http.post("/auth/sign_in", data={"username": "alice@example.org", "password": PW})
    assert r.status_code == 302
    assert r.headers["location"] == "/oauth/authorize"
    r = await http.get("/oauth/authorize")
    assert r.status_code == 200
    assert "<em>read write</em>" in r.text
    assert "<b>alice</b>" in r.text
    r = await http.post("/oauth/authorize")
    assert r.status_code == 302
    assert "set-cookie" not in r.headers
    loc = urllib.parse.urlsplit(r.headers["location"])
    assert loc.path == "/oauth/oob"
    q = urllib.parse.parse_qs(loc.query)
    assert q["state"] == ["s1"]
    assert SECRET_RE.match(q["code"][0])
    r = await http.get(r.headers["location"])
    assert '<section class="oob-token">' in r.text
    assert f"<code>{q['code'][0]}</code>" in r.text
    assert "<em>read write</em>" in r.text
    assert "trusted-proxies" not in r.text  # rate limiting is off
    r = await http.post("/oauth/token", data=token_form(app, q["code"][0]))
    assert r.json()["scope"] == "read write"


async def test_oob_page_banner_when_rate_limited_and_authorize_helper() -> None:
    async with FakeGoToSocial(rate_limit=300) as gts, httpx.AsyncClient(base_url=gts.base_url) as http:
        gts.add_user("alice")
        app = await register(http)
        await http.get(authorize_url(gts, app))
        await http.post("/auth/sign_in", data={"username": "alice@example.org", "password": PW})
        r = await http.post("/oauth/authorize")
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)["code"][0]
        page = (await http.get(r.headers["location"])).text
        first_code = re.search(r"<code>(.*?)</code>", page)
        assert first_code is not None
        assert first_code.group(1) == "trusted-proxies"
        assert f"<code>{code}</code>" in page
        scraped = await gts.authorize(authorize_url(gts, app), "alice@example.org", PW)
        assert SECRET_RE.match(scraped)
        assert scraped in gts.codes


async def test_authorize_errors(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    r = await http.get("/oauth/authorize?client_id=x&response_type=code")
    assert r.status_code == 400
    assert r.json() == {
        "error": "Bad Request: Key: 'OAuthAuthorize.RedirectURI' Error:Field validation for "
        f"'RedirectURI' failed on the 'required' tag: {HELPFUL_ADVICE}"
    }
    r = await http.get("/auth/sign_in", headers={"Accept": "application/json"})
    assert r.status_code == 406
    r = await http.post("/auth/sign_in", data={"username": "alice@example.org", "password": "nope"})
    assert r.status_code == 401
    assert r.json() == {"error": f"Unauthorized: password/email combination was incorrect: {HELPFUL_ADVICE}"}
    async with httpx.AsyncClient(base_url=gts.base_url) as fresh:
        r = await fresh.post("/oauth/authorize")
        assert r.status_code == 500
        assert r.json()["error"].startswith("Internal Server Error: key response_type not found in session")
        r = await fresh.get("/oauth/oob?code=X")
        assert r.status_code == 500
        assert "neither userid nor userid_awaiting_2fa" in r.json()["error"]
        r = await fresh.get("/oauth/oob")
        assert r.status_code == 400
        assert "no 'code' query value provided" in r.json()["error"]
    async with httpx.AsyncClient(base_url=gts.base_url) as fresh:
        await fresh.get(authorize_url(gts, {"client_id": "01UNKNOWN"}))
        await fresh.post("/auth/sign_in", data={"username": "alice@example.org", "password": PW})
        r = await fresh.get("/oauth/authorize")
        assert r.status_code == 500
        assert r.json()["error"].startswith(
            "Internal Server Error: db error getting app for clientID 01UNKNOWN"
        )


async def test_invalid_scope_redirects_to_urn(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app = await register(http, "read:accounts read:notifications")
    with pytest.raises(AuthorizeError) as info:
        await gts.authorize(authorize_url(gts, app, "read"), "alice@example.org", PW)
    assert info.value.error == "invalid_scope"
    # httpx refuses a `urn:` Location even without following it, so this part runs on aiohttp.
    async with aiohttp.ClientSession(base_url=gts.base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        await s.get(authorize_url(gts, app, "read", state="st"), allow_redirects=False)
        await s.post(
            "/auth/sign_in", data={"username": "alice@example.org", "password": PW}, allow_redirects=False
        )
        r = await s.post("/oauth/authorize", allow_redirects=False)
        assert r.status == 302
        assert r.headers["Location"] == (
            f"{OOB}?error=invalid_scope&error_description=The+requested+scope+is+"
            "invalid%2C+unknown%2C+or+malformed&state=st"
        )


# --- §3 token ----------------------------------------------------------------------------------------
async def test_token_success_and_single_use(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app = await register(http)
    code = await gts.authorize(authorize_url(gts, app, "read"), "alice@example.org", PW)
    bad = {**token_form(app, code), "client_secret": "wrong"}
    r = await http.post("/oauth/token", data=bad)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_client"
    r = await http.post("/oauth/token", data=token_form(app, code, "https://elsewhere.example/cb"))
    assert r.status_code == 403
    assert r.json()["error"] == "invalid redirect uri"
    r = await http.post("/oauth/token", json=token_form(app, code), auth=("ignored", "ignored"))
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"access_token", "created_at", "scope", "token_type"}
    assert body["scope"] == "read"
    assert body["token_type"] == "Bearer"
    assert SECRET_RE.match(body["access_token"])
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
    r = await http.post("/oauth/token", data=token_form(app, code))
    assert r.status_code == 400
    assert r.json() == {
        "error": "sql: no rows in result set",
        "error_description": "Bad Request: could not get access token: sql: no rows in result set: "
        + HELPFUL_ADVICE,
    }
    assert gts.active_tokens("alice") == [body["access_token"]]


async def test_token_prechecks(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app = await register(http)
    r = await http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "redirect_uri": OOB,
        },
    )
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "Bad Request: code was not set in the "
        "token request form, but must be set since grant_type is authorization_code",
    }
    r = await http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": "x"},
        auth=(app["client_id"], app["client_secret"]),
    )
    assert r.json()["error_description"] == (
        "Bad Request: client_id was not set in the token request form: "
        "client_secret was not set in the token request form: "
        "redirect_uri was not set in the token request form"
    )
    r = await http.post("/oauth/token", data={**token_form(app, "x"), "grant_type": "refresh_token"})
    assert r.json()["error_description"] == (
        "Bad Request: a code was provided in the token request form, but "
        "grant_type was not set to authorization_code"
    )
    form = {k: v for k, v in token_form(app, "x").items() if k != "code"}
    r = await http.post("/oauth/token", data={**form, "grant_type": "refresh_token"})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"
    assert (
        "Supported grant types are: authorization_code, client_credentials" in r.json()["error_description"]
    )


async def test_code_expiry_and_mismatch() -> None:
    async with FakeGoToSocial(code_ttl=300) as gts, httpx.AsyncClient(base_url=gts.base_url) as http:
        gts.add_user("alice")
        app = await register(http, redirect=f"{OOB}\nhttps://cb.example/x")
        other = await register(http)
        code = await gts.authorize(authorize_url(gts, app), "alice@example.org", PW)
        r = await http.post("/oauth/token", data=token_form(app, code, "https://cb.example/x"))
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_grant"
        r = await http.post("/oauth/token", data=token_form(other, code))
        assert r.json()["error"] == "invalid_grant"
        gts.age_codes(301)
        r = await http.post("/oauth/token", data=token_form(app, code))
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_grant"


async def test_client_credentials(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app = await register(http)
    form = {
        "grant_type": "client_credentials",
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "redirect_uri": OOB,
    }
    r = await http.post("/oauth/token", data=form)
    assert r.json()["expires_in"] == 7200
    assert r.json()["scope"] == "read"
    r2 = await http.get("/api/v1/accounts/verify_credentials", headers=bearer(r.json()["access_token"]))
    assert r2.status_code == 401
    assert r2.json() == {"error": "Unauthorized: user not supplied or not authorized"}
    r = await http.post("/oauth/token", data={**form, "scope": "admin"})
    assert r.status_code == 403
    assert r.json()["error"] == "invalid_scope"


# --- §4 revoke ---------------------------------------------------------------------------------------
async def test_revoke(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app, token = await login(gts, http)
    other = await register(http)
    r = await http.post(
        "/oauth/revoke",
        json={"client_id": app["client_id"], "client_secret": app["client_secret"], "token": token},
    )
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "Bad Request: client_id not set"}
    r = await http.post(
        "/oauth/revoke",
        data={"client_id": other["client_id"], "client_secret": other["client_secret"], "token": token},
    )
    assert r.status_code == 403
    assert r.json()["error"] == "unauthorized_client"
    q = {"client_id": app["client_id"], "client_secret": app["client_secret"], "token": token}
    r = await http.post("/oauth/revoke", params=q)
    assert r.status_code == 200
    assert r.json() == {}
    r = await http.post("/oauth/revoke", data={**q, "client_id": "bogus"})
    assert r.status_code == 200
    assert r.json() == {}
    r = await http.get("/api/v1/accounts/verify_credentials", headers=bearer(token))
    assert r.status_code == 401
    assert r.json() == NO_TOKEN
    gts.faults.revoke_enabled = False
    r = await http.post("/oauth/revoke", data=q)
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found"}


# --- §5/§6 scopes and verify_credentials ---------------------------------------------------------------
async def test_token_transport_and_scopes(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    _, token = await login(gts, http)
    r = await http.get("/api/v1/accounts/verify_credentials", headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["acct"] == "alice"
    assert r.json()["locked"] is True
    assert "source" in r.json()
    for headers, params in (
        ({"Authorization": f"bearer {token}"}, {}),
        ({}, {"access_token": token}),
        ({}, {}),
    ):
        r = await http.get("/api/v1/accounts/verify_credentials", headers=headers, params=params)
        assert r.status_code == 401
        assert r.json() == NO_TOKEN
        assert "www-authenticate" not in r.headers
    _, granular = await login(gts, http, "read:notifications", "read:notifications read:accounts")
    r = await http.get("/api/v1/accounts/verify_credentials", headers=bearer(granular))
    assert r.status_code == 403
    assert r.json() == SCOPE_403
    assert (await http.get("/api/v1/notifications", headers=bearer(granular))).status_code == 200
    _, profile = await login(gts, http, "profile", "profile")
    assert (await http.get("/api/v1/accounts/verify_credentials", headers=bearer(profile))).status_code == 200
    r = await http.get("/api/v1/notifications", headers=bearer(profile))
    assert r.status_code == 403
    assert r.json() == SCOPE_403


# --- §7 notifications --------------------------------------------------------------------------------
async def test_notification_paging(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    _, token = await login(gts, http)
    ids = [gts.notify("alice", "mention" if i % 2 else "favourite", "bob")["id"] for i in range(10)]
    assert ids == sorted(ids)
    assert all(ULID_RE.match(i) for i in ids)

    async def page(**params: Any) -> httpx.Response:
        return await http.get("/api/v1/notifications", params=params, headers=bearer(token))

    r = await page(limit=3)
    assert [n["id"] for n in r.json()] == ids[::-1][:3]
    base = f"{gts.base_url}/api/v1/notifications"
    assert r.headers["link"] == (
        f'<{base}?limit=3&max_id={ids[7]}>; rel="next", <{base}?limit=3&min_id={ids[9]}>; rel="prev"'
    )
    assert [n["id"] for n in (await page(limit=3, max_id=ids[7])).json()] == [ids[6], ids[5], ids[4]]
    assert [n["id"] for n in (await page(limit=3, since_id=ids[2])).json()] == [ids[9], ids[8], ids[7]]
    assert [n["id"] for n in (await page(limit=3, min_id=ids[2])).json()] == [ids[5], ids[4], ids[3]]
    assert [n["id"] for n in (await page(limit=3, min_id=ids[2], since_id=ids[6])).json()] == [
        ids[5],
        ids[4],
        ids[3],
    ]
    r = await page(since_id=ids[9])
    assert r.json() == []
    assert "link" not in r.headers
    r = await page(limit=500)
    assert len(r.json()) == 10
    assert "limit=80&" in r.headers["link"]
    assert len((await page(limit=-5)).json()) == 1
    r = await page(limit="abc")
    assert r.status_code == 400
    assert r.json() == {"error": "Bad Request: bad integer limit value"}
    r = await http.get("/api/v1/notifications?types[]=mention&types[]=bogus", headers=bearer(token))
    assert {n["type"] for n in r.json()} == {"mention"}
    assert "types%5B%5D=mention" in r.headers["link"]
    assert len((await page(types="mention")).json()) == 10  # only the bracket spelling is read
    assert len((await http.get("/api/v1/notifications?types[]=bogus", headers=bearer(token))).json()) == 10
    r = await http.get("/api/v1/notifications?exclude_types[]=mention", headers=bearer(token))
    assert {n["type"] for n in r.json()} == {"favourite"}


async def test_notification_shapes_get_and_clear(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    _, read_only = await login(gts, http)
    _, token = await login(gts, http, "read write")
    follow = gts.notify("alice", "follow_request", "carol@remote.example")
    reblog = gts.notify("alice", "reblog", "bob", status_text="mine <3")
    assert list(follow) == ["id", "type", "created_at", "account"]
    assert follow["account"]["acct"] == "carol@remote.example"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$", follow["created_at"])
    assert reblog["status"]["account"]["acct"] == "alice"
    assert reblog["status"]["content"] == "<p>mine &lt;3</p>"
    r = await http.get(f"/api/v1/notifications/{reblog['id']}", headers=bearer(token))
    assert r.json() == reblog
    assert "\\u003cp\\u003e" in r.text
    r = await http.get("/api/v1/notifications/unread_count", headers=bearer(token))
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found: notification not found"}
    bobs = gts.notify("bob", "mention", "alice")
    r = await http.get(f"/api/v1/notifications/{bobs['id']}", headers=bearer(token))
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found"}
    r = await http.post("/api/v1/notifications/clear", headers=bearer(read_only))
    assert r.status_code == 403
    assert r.json() == SCOPE_403
    r = await http.post("/api/v1/notifications/clear", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {}
    assert gts.notifications("alice") == []
    assert len(gts.notifications("bob")) == 1
