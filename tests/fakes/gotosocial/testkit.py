"""Raw-HTTP helpers for tests that drive the fake GoToSocial (no bot code involved)."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import httpx

from tests.fakes.gotosocial import FakeGoToSocial

OOB = "urn:ietf:wg:oauth:2.0:oob"
PW = "Long-Strong-Passw0rd!"
SECRET_RE = re.compile(r"^[A-Z0-9_-]{48}$")
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SCOPE_403 = {"error": "Forbidden: token has insufficient scope permission"}
NO_TOKEN = {"error": "Unauthorized: token not supplied"}


async def register(
    http: httpx.AsyncClient, scopes: str = "read write", redirect: str = OOB
) -> dict[str, Any]:
    r = await http.post(
        "/api/v1/apps", data={"client_name": "bot", "redirect_uris": redirect, "scopes": scopes}
    )
    assert r.status_code == 200
    return dict(r.json())


def authorize_url(gts: FakeGoToSocial, app: dict[str, Any], scope: str = "read", **extra: str) -> str:
    params = {"client_id": app["client_id"], "redirect_uri": OOB, "response_type": "code", "scope": scope}
    return f"{gts.base_url}/oauth/authorize?{urllib.parse.urlencode({**params, **extra})}"


def token_form(app: dict[str, Any], code: str, redirect: str = OOB) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "redirect_uri": redirect,
    }


async def login(
    gts: FakeGoToSocial, http: httpx.AsyncClient, scope: str = "read", app_scopes: str = "read write"
) -> tuple[dict[str, Any], str]:
    app = await register(http, app_scopes)
    code = await gts.authorize(authorize_url(gts, app, scope), "alice@example.org", PW)
    r = await http.post("/oauth/token", data=token_form(app, code))
    assert r.status_code == 200
    return app, str(r.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
