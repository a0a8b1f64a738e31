"""Contract test: the fake GoToSocial's routes and JSON shapes against GoToSocial's own swagger spec.

The contract is `tests/fakes/gotosocial/contract.yaml`: the part of GoToSocial's swagger spec the bot and the
fake rely on, copied unchanged (its header says from which GoToSocial commit). Where the spec and the live
server disagree, the live server wins and the exception is listed here with its reason (the § numbers are
those of the project's GoToSocial client API notes).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes.gotosocial import FakeGoToSocial

OOB = "urn:ietf:wg:oauth:2.0:oob"
PW = "Long-Strong-Passw0rd!"
CONTRACT = Path(__file__).resolve().parents[1] / "fakes" / "gotosocial" / "contract.yaml"

# Routes the fake serves that the swagger does not describe (reference §2, §3, §7).
NOT_IN_SWAGGER = {
    ("GET", "/oauth/authorize"): "browser flow page (§2), not in the API spec",
    ("POST", "/oauth/authorize"): "browser flow Allow button (§2)",
    ("GET", "/auth/sign_in"): "browser flow sign-in page (§2)",
    ("POST", "/auth/sign_in"): "browser flow sign-in form (§2)",
    ("GET", "/oauth/oob"): "browser flow OOB page (§2.6)",
    ("POST", "/oauth/token"): "token endpoint (§3); only its oauthToken definition is in the spec",
    # The spec spells it /api/v1/notification/{id}; the live server routes /api/v1/notifications/:id (§7).
    ("GET", "/api/v1/notifications/{id}"): "spec typo: /api/v1/notification/{id}",
}
SPEC_ALIASES = {"/api/v1/notifications/{id}": "/api/v1/notification/{id}"}
# Fields the live server sends as JSON null.
NULLABLE = {
    "in_reply_to_id",
    "in_reply_to_account_id",
    "last_status_at",
    "reblog",
    "card",
    "poll",
    "language",
}
# Keys the live server emits that the spec does not declare (reference §3.1: client_credentials tokens).
UNDECLARED_OK = {"oauthToken": {"expires_in"}}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with CONTRACT.open(encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=loader)
    assert isinstance(data, dict)
    return data


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for k, v in node.items() if k != "$ref"))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_the_contract_is_complete_in_itself(spec: dict[str, Any]) -> None:
    """Every definition an operation refers to was copied along, so no check silently stops at a $ref."""
    refs = _refs(spec["paths"]) | _refs(spec["definitions"])
    assert refs, "the contract refers to no definition at all"
    missing = sorted(r for r in refs if r.rsplit("/", 1)[1] not in spec["definitions"])
    assert missing == []
    assert "oauthToken" in spec["definitions"]


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _spec_op(spec: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    want = _template(SPEC_ALIASES.get(path, path))
    for spec_path, ops in spec["paths"].items():
        if _template(spec_path) == want and method.lower() in ops:
            return dict(ops[method.lower()])
    return None


def test_every_fake_route_is_in_the_spec(spec: dict[str, Any]) -> None:
    routes = FakeGoToSocial().route_table()
    missing = [(m, p) for m, p in routes if (m, p) not in NOT_IN_SWAGGER and _spec_op(spec, m, p) is None]
    assert missing == []
    # The exceptions are honest: none of them is in the spec under its live name.
    for method, path in NOT_IN_SWAGGER:
        assert (method, path) in routes
        assert not any(
            _template(p) == _template(path) and method.lower() in ops for p, ops in spec["paths"].items()
        )
    assert ("HEAD", "/livez") in routes
    assert ("HEAD", "/readyz") in routes


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = ""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["definitions"][name]
    return name, schema


def check_shape(spec: dict[str, Any], value: Any, schema: dict[str, Any], where: str) -> None:
    """Every emitted key is declared, with the declared JSON type; recurses through $refs and arrays."""
    name, schema = _resolve(spec, schema)
    field = where.rsplit(".", 1)[-1].split("[")[0]
    if value is None:
        assert field in NULLABLE, f"{where} is null"
        return
    kind = schema.get("type") or ("object" if "properties" in schema else None)
    if kind == "string":
        assert isinstance(value, str), f"{where} should be a string: {value!r}"
    elif kind == "integer":
        assert isinstance(value, int), f"{where} should be an integer: {value!r}"
        assert not isinstance(value, bool), f"{where} should be an integer: {value!r}"
    elif kind == "number":
        assert isinstance(value, int | float), f"{where} should be a number: {value!r}"
        assert not isinstance(value, bool), f"{where} should be a number: {value!r}"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where} should be a boolean: {value!r}"
    elif kind == "array":
        assert isinstance(value, list), f"{where} should be an array"
        for i, item in enumerate(value):
            check_shape(spec, item, schema.get("items", {}), f"{where}[{i}]")
    elif kind == "object":
        assert isinstance(value, dict), f"{where} should be an object"
        props = schema.get("properties")
        if props is None:
            return  # free-form object (e.g. instance stats, nodeinfo metadata)
        extra = set(value) - set(props) - UNDECLARED_OK.get(name, set())
        assert not extra, f"{where} ({name}) has keys the spec does not declare: {sorted(extra)}"
        for key, item in value.items():
            if key in props:
                check_shape(spec, item, props[key], f"{where}.{key}")


def response_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op = _spec_op(spec, method, path)
    assert op is not None, f"{method} {path} not in spec"
    return dict(op["responses"]["200"]["schema"])


def _definition(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


@pytest.fixture
async def world() -> AsyncIterator[tuple[FakeGoToSocial, httpx.AsyncClient, dict[str, Any], str]]:
    async with FakeGoToSocial() as gts, httpx.AsyncClient(base_url=gts.base_url) as http:
        gts.add_user("alice")
        r = await http.post(
            "/api/v1/apps",
            data={"client_name": "bot", "scopes": "read write", "website": "https://bot.example"},
        )
        app = r.json()
        params = {
            "client_id": app["client_id"],
            "redirect_uri": OOB,
            "response_type": "code",
            "scope": "read",
        }
        url = f"{gts.base_url}/oauth/authorize?{urllib.parse.urlencode(params)}"
        code = await gts.authorize(url, "alice@example.org", PW)
        token = await http.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "redirect_uri": OOB,
            },
        )
        app["_token_response"] = token.json()
        yield gts, http, app, token.json()["access_token"]


async def test_application_and_token_shapes(
    spec: dict[str, Any], world: tuple[FakeGoToSocial, httpx.AsyncClient, dict[str, Any], str]
) -> None:
    _, http, app, _ = world
    token_response = app.pop("_token_response")
    check_shape(spec, app, response_schema(spec, "POST", "/api/v1/apps"), "application")
    for key in (
        "id",
        "name",
        "website",
        "redirect_uri",
        "redirect_uris",
        "client_id",
        "client_secret",
        "scopes",
    ):
        assert key in app
    check_shape(spec, token_response, _definition(spec, "oauthToken"), "token")
    assert set(token_response) == set(spec["definitions"]["oauthToken"]["properties"])
    cc = await http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "redirect_uri": OOB,
        },
    )
    check_shape(spec, cc.json(), _definition(spec, "oauthToken"), "client_credentials token")


async def test_account_and_notification_shapes(
    spec: dict[str, Any], world: tuple[FakeGoToSocial, httpx.AsyncClient, dict[str, Any], str]
) -> None:
    gts, http, _, token = world
    auth = {"Authorization": f"Bearer {token}"}
    me = (await http.get("/api/v1/accounts/verify_credentials", headers=auth)).json()
    check_shape(spec, me, response_schema(spec, "GET", "/api/v1/accounts/verify_credentials"), "account")
    for key in (
        "id",
        "username",
        "acct",
        "display_name",
        "url",
        "locked",
        "bot",
        "created_at",
        "source",
        "role",
    ):
        assert key in me
    for kind, origin in (
        ("follow_request", "carol@remote.example"),
        ("mention", "bob"),
        ("reblog", "bob"),
        ("favourite", "dave@remote.example"),
        ("poll", "bob"),
        ("status", "bob"),
        ("update", "bob"),
        ("follow", "erin"),
        ("pending.reply", "bob"),
    ):
        gts.notify("alice", kind, origin, spoiler_text="cw" if kind == "mention" else "")
    listing = (await http.get("/api/v1/notifications", headers=auth)).json()
    assert len(listing) == 9
    check_shape(spec, listing, response_schema(spec, "GET", "/api/v1/notifications"), "notifications")
    assert {"status" in n for n in listing} == {True, False}
    one = (await http.get(f"/api/v1/notifications/{listing[0]['id']}", headers=auth)).json()
    check_shape(spec, one, response_schema(spec, "GET", "/api/v1/notifications/{id}"), "notification")


async def test_instance_and_nodeinfo_shapes(
    spec: dict[str, Any], world: tuple[FakeGoToSocial, httpx.AsyncClient, dict[str, Any], str]
) -> None:
    _, http, _, _ = world
    for path, required in (
        ("/api/v1/instance", ("uri", "version", "urls", "account_domain")),
        ("/api/v2/instance", ("domain", "version", "source_url", "configuration")),
    ):
        body = (await http.get(path)).json()
        check_shape(spec, body, response_schema(spec, "GET", path), path)
        for key in required:
            assert key in body
    links = (await http.get("/.well-known/nodeinfo")).json()
    check_shape(spec, links, response_schema(spec, "GET", "/.well-known/nodeinfo"), "wellknown")
    for version in ("2.0", "2.1"):
        info = (await http.get(f"/nodeinfo/{version}")).json()
        check_shape(spec, info, response_schema(spec, "GET", "/nodeinfo/{schema}"), f"nodeinfo {version}")


def test_shape_checker_catches_drift(spec: dict[str, Any]) -> None:
    account = _definition(spec, "account")
    with pytest.raises(AssertionError, match="does not declare"):
        check_shape(spec, {"id": "x", "invented": 1}, account, "account")
    with pytest.raises(AssertionError, match="should be a boolean"):
        check_shape(spec, {"locked": "true"}, account, "account")
    with pytest.raises(AssertionError, match="is null"):
        check_shape(spec, {"username": None}, account, "account")


# The write routes (issue 12): each is checked against the scope its spec operation declares.
WRITE_ROUTES = [
    ("GET", "/api/v1/statuses/{id}"),
    ("POST", "/api/v1/statuses/{id}/favourite"),
    ("POST", "/api/v1/statuses/{id}/unfavourite"),
    ("POST", "/api/v1/statuses/{id}/reblog"),
    ("POST", "/api/v1/statuses/{id}/unreblog"),
    ("GET", "/api/v1/accounts/{id}/statuses"),
    ("GET", "/api/v1/follow_requests"),
    ("POST", "/api/v1/follow_requests/{id}/authorize"),
    ("POST", "/api/v1/follow_requests/{id}/reject"),
    ("POST", "/api/v1/statuses"),
]


@pytest.mark.parametrize(("method", "template"), WRITE_ROUTES, ids=[f"{m} {p}" for m, p in WRITE_ROUTES])
async def test_write_routes_check_the_spec_scope_and_answer_in_its_shape(
    spec: dict[str, Any], method: str, template: str
) -> None:
    async with FakeGoToSocial() as gts, httpx.AsyncClient(base_url=gts.base_url) as http:
        gts.add_user("alice")
        op = _spec_op(spec, method, template)
        assert op is not None
        [scope] = op["security"][0]["OAuth2 Bearer"]
        status_id = gts.seed_status("bob@remote.example", "hello @alice")["id"]
        requester = gts.seed_follow_request("alice", "carol@remote.example")
        ids = {"/api/v1/accounts/": gts.user("alice").account_id, "/api/v1/follow_requests/": requester}
        fill = next((v for k, v in ids.items() if template.startswith(k)), status_id)
        path = template.replace("{id}", fill)
        data = {"status": "a reply", "in_reply_to_id": status_id} if template == "/api/v1/statuses" else None
        others = "read:accounts" if scope != "read:accounts" else "read:notifications"
        refused = await http.request(
            method, path, data=data, headers={"Authorization": f"Bearer {gts.issue_token('alice', others)}"}
        )
        assert refused.status_code == 403
        assert refused.json() == {"error": "Forbidden: token has insufficient scope permission"}
        allowed = await http.request(
            method, path, data=data, headers={"Authorization": f"Bearer {gts.issue_token('alice', scope)}"}
        )
        assert allowed.status_code == 200, allowed.text
        check_shape(spec, allowed.json(), response_schema(spec, method, template), template)
