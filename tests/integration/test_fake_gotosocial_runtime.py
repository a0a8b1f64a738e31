"""Pins the fake GoToSocial to the reference over raw HTTP: streaming, rate limits, instance documents,
fault knobs, ids and the Mastodon imitation (§8-§11)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from tests.fakes.gotosocial import MASTODON, FakeGoToSocial
from tests.fakes.gotosocial.core import UlidFactory
from tests.fakes.gotosocial.testkit import (
    NO_TOKEN,
    PW,
    SCOPE_403,
    ULID_RE,
    authorize_url,
    bearer,
    login,
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


# --- §8 streaming -------------------------------------------------------------------------------------
async def test_streaming_frames_pings_and_revoke(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    app, token = await login(gts, http)
    ws_url = gts.base_url.replace("http", "ws") + "/api/v1/streaming"
    async with aiohttp.ClientSession() as s:
        a = await s.ws_connect(f"{ws_url}?stream=user:notification&access_token={token}", autoping=False)
        b = await s.ws_connect(f"{ws_url}?stream=user", protocols=(token,), autoping=False)
        c = await s.ws_connect(f"{ws_url}?stream=nonsense", headers=bearer(token), autoping=False)
        assert b.protocol == token
        await http.post(
            "/oauth/revoke",
            data={"client_id": app["client_id"], "client_secret": app["client_secret"], "token": token},
        )
        note = gts.notify("alice", "mention", "bob", status_text="hi")
        frame_a = await a.receive(timeout=60)
        assert frame_a.type == aiohttp.WSMsgType.TEXT
        assert list(json.loads(frame_a.data)) == ["stream", "event", "payload"]
        assert json.loads(frame_a.data)["stream"] == ["user:notification"]
        assert json.loads(json.loads(frame_a.data)["payload"]) == note
        frame_b = await b.receive(timeout=60)
        assert json.loads(frame_b.data)["stream"] == ["user"]
        ping = await c.receive(timeout=60)
        assert ping.type == aiohttp.WSMsgType.PING
        assert ping.data == b"ping!"
        for ws in (a, b, c):
            await ws.close()


async def test_streaming_handshake_errors(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    _, token = await login(gts, http)
    _, granular = await login(gts, http, "read:notifications", "read:notifications")
    r = await http.get("/api/v1/streaming?stream=user")
    assert r.status_code == 401
    assert r.json() == NO_TOKEN
    r = await http.get("/api/v1/streaming?stream=user&access_token=bogus")
    assert r.status_code == 401
    assert r.json() == {"error": "Unauthorized"}
    r = await http.get(f"/api/v1/streaming?stream=user&access_token={granular}")
    assert r.status_code == 403
    assert r.json() == SCOPE_403
    r = await http.get(f"/api/v1/streaming?stream=user&access_token={token}")
    assert r.status_code == 400
    assert r.text.strip() == "Bad Request"
    assert (await http.get("/api/v1/streaming/health")).json() == {"error": "Not Found"}


# --- §9 rate limits -------------------------------------------------------------------------------------
async def test_rate_limit_window_and_buckets() -> None:
    async with (
        FakeGoToSocial(rate_limit=3, rate_window=300) as gts,
        httpx.AsyncClient(base_url=gts.base_url) as http,
    ):
        seen = [await http.get("/api/v1/instance") for _ in range(3)]
        assert [r.headers["x-ratelimit-remaining"] for r in seen] == ["2", "1", "0"]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$", seen[0].headers["x-ratelimit-reset"])
        r = await http.post("/oauth/token")
        assert r.status_code == 429
        assert r.json() == {"error": "rate limit reached"}
        assert "retry-after" not in r.headers
        assert r.headers["x-ratelimit-limit"] == "3"
        assert (await http.get("/nodeinfo/2.0")).status_code == 200  # another bucket
        r = await http.get("/livez", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == "2"
    async with (
        FakeGoToSocial(rate_limit=1, rate_window=300) as gts,
        httpx.AsyncClient(base_url=gts.base_url) as http,
    ):
        assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/livez")).status_code == 429
        # the window ends (moved to now instead of waiting it out, so the machine's speed does not matter)
        buckets = gts.state.rate_buckets
        for key, (_, count, seen) in list(buckets.items()):
            buckets[key] = (time.time(), count, seen)
        assert (await http.get("/livez")).status_code == 200


async def test_throttle_knob(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    gts.faults.throttle = True
    r = await http.get("/api/v1/instance")
    assert r.status_code == 429
    assert r.json() == {"error": "server capacity exceeded"}
    assert r.headers["retry-after"] == "30"


# --- §10/§11 instance documents and errors ---------------------------------------------------------------
async def test_instance_documents(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    v1 = await http.get("/api/v1/instance")
    assert v1.headers["server"] == "gotosocial"
    assert v1.headers["cache-control"] == "no-store"
    assert v1.json()["uri"] == gts.host
    assert v1.json()["urls"]["streaming_api"] == f"wss://{gts.host}"
    assert v1.json()["version"] == "0.20.0"
    v2 = (await http.get("/api/v2/instance")).json()
    assert v2["source_url"] == "https://codeberg.org/superseriousbusiness/gotosocial"
    assert "api_versions" not in v2
    links = (await http.get("/.well-known/nodeinfo")).json()["links"]
    assert links[0]["href"] == f"{gts.base_url}/nodeinfo/2.0"
    ni = await http.get("/nodeinfo/2.1")
    assert ni.json()["software"]["name"] == "gotosocial"
    assert "repository" in ni.json()["software"]
    assert "repository" not in (await http.get("/nodeinfo/2.0")).json()["software"]
    assert (await http.head("/readyz")).status_code == 200
    for path in ("/nope", "/api/v2/notifications", "/api/v1/notifications/x/dismiss"):
        r = await http.post(path)
        assert r.status_code == 404
        assert r.json() == {"error": "Not Found"}
    r = await http.get("/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")


# --- faults --------------------------------------------------------------------------------------------
async def test_fault_knobs(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    path = "/api/v1/instance"
    gts.faults.status_override[path] = 503
    r = await http.get(path)
    assert r.status_code == 503
    assert r.json() == {"error": "Service Unavailable"}
    gts.faults.status_override.clear()
    gts.faults.malformed_json_paths.add(path)
    with pytest.raises(json.JSONDecodeError):
        (await http.get(path)).json()
    gts.faults.malformed_json_paths.clear()
    gts.faults.huge_body_paths.add(path)
    gts.faults.huge_body_size = 300_000
    assert len((await http.get(path)).content) >= 300_000
    gts.faults.huge_body_paths.clear()
    gts.faults.redirect_paths[path] = "http://10.0.0.1/x"
    r = await http.get(path)
    assert r.status_code == 302
    assert r.headers["location"] == "http://10.0.0.1/x"
    gts.faults.redirect_paths.clear()
    gts.faults.delay = 1.0
    with pytest.raises(httpx.ReadTimeout):
        await http.get(path, timeout=0.1)
    gts.faults.delay = 0
    gts.faults.down = True
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get(path)
    gts.faults.down_status = 503
    assert (await http.get(path)).status_code == 503
    gts.faults.down = False
    assert gts.requests_to(path) >= 7


async def test_drop_streams(gts: FakeGoToSocial, http: httpx.AsyncClient) -> None:
    _, token = await login(gts, http)
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(
            gts.base_url.replace("http", "ws") + f"/api/v1/streaming?stream=user&access_token={token}"
        )
        assert gts.open_streams("alice") == 1
        assert gts.faults.drop_streams() == 1
        msg = await ws.receive(timeout=60)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        await ws.close()


# --- ids and the Mastodon imitation ----------------------------------------------------------------------
def test_ulids_strictly_increase_within_a_millisecond() -> None:
    factory = UlidFactory()
    ids = [factory.new(now_ms=1_700_000_000_000) for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(ULID_RE.match(i) for i in ids)


async def test_mastodon_mode() -> None:
    async with (
        FakeGoToSocial(profile=MASTODON, id_start=90) as gts,
        httpx.AsyncClient(base_url=gts.base_url) as http,
    ):
        gts.add_user("alice")
        app, token = await login(gts, http)
        ids = [gts.notify("alice", "mention", "bob")["id"] for _ in range(3)]
        assert all(i.isdigit() for i in ids)
        r = await http.get("/api/v1/notifications", headers=bearer(token))
        got = [n["id"] for n in r.json()]
        assert got == sorted(ids, key=lambda i: (len(i), i), reverse=True)
        assert r.headers["server"] == "Mastodon"
        assert (await http.get("/nodeinfo/2.0")).json()["software"]["name"] == "mastodon"
        code = await gts.authorize(authorize_url(gts, app), "alice@example.org", PW)
        assert (await http.post("/oauth/token", data=token_form(app, code))).status_code == 200
        r = await http.post("/oauth/token", data=token_form(app, code))
        assert r.json()["error"] == "invalid_grant"
