"""The write client (`FediverseActions`) over loopback HTTP to the fake, in every server profile: posts,
replies, favourites, boosts, follow requests, scope refusals, and each server's Idempotency-Key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from bot.errors import (
    ActionRefusedError,
    InsufficientScopeError,
    RemoteNotFoundError,
    TokenRejectedError,
)
from bot.fediverse.actions import FediverseActions
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import InstanceRef, parse_instance
from bot.fediverse.models import MAX_MENTIONS
from bot.fediverse.replies import StatusDraft, Visibility, compose_reply
from tests.fakes.gotosocial import PROFILES, FakeGoToSocial, Profile
from tests.integration.fedi_support import fedi_client, loopback, serve

ALL = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
ACT = "read write:statuses write:favourites write:follows"


@pytest.fixture
async def client() -> AsyncIterator[FediverseClient]:
    async with fedi_client() as c:
        yield c


async def _fake(profile: Profile) -> FakeGoToSocial:
    fake = FakeGoToSocial(profile=profile)
    await fake.start()
    fake.add_user("alice")
    return fake


@pytest.fixture
async def fake(profile: Profile) -> AsyncIterator[FakeGoToSocial]:
    server = await _fake(profile)
    try:
        yield server
    finally:
        await server.stop()


def instance_of(fake: FakeGoToSocial) -> InstanceRef:
    return parse_instance(fake.base_url, allow_http=True)


def actions(client: FediverseClient) -> FediverseActions:
    return client.actions


def key() -> str:
    return uuid.uuid4().hex


@ALL
async def test_reply_to_a_mention_posts_with_reply_id_mentions_visibility_and_cw(
    fake: FakeGoToSocial, client: FediverseClient
) -> None:
    token = fake.issue_token("alice", ACT)
    seeded = fake.seed_status(
        "bob@remote.example", "@alice @carol@third.example look", visibility="private", spoiler_text="cw"
    )
    fake.seed_status("carol@third.example", "hello")  # makes carol known, as a server would
    instance = instance_of(fake)
    original = await actions(client).get_status(instance, token, seeded["id"])
    me = await client.verify_credentials(instance, token)
    assert original.account is not None
    assert original.account.acct == "bob@remote.example"
    assert set(original.mentions) == {"alice"}  # carol was unknown when bob posted

    draft = compose_reply(original, me.acct, "sounds good")
    posted = await actions(client).post_status(instance, token, draft, idempotency_key=key())

    [mine] = fake.posted_statuses("alice")
    assert mine["id"] == posted.id
    assert posted.url == mine["url"]
    assert mine["in_reply_to_id"] == seeded["id"]
    assert mine["visibility"] == "private"
    assert mine["spoiler_text"] == "cw"
    assert "@bob@remote.example sounds good" in mine["content"]
    assert [m["acct"] for m in mine["mentions"]] == ["bob@remote.example"]
    method, path, body = fake.write_calls[-1]
    assert (method, path) == ("POST", "/api/v1/statuses")
    assert body == {
        "status": "@bob@remote.example sounds good",
        "in_reply_to_id": seeded["id"],
        "visibility": "private",
        "spoiler_text": "cw",
    }


@ALL
async def test_favourite_boost_and_undo(fake: FakeGoToSocial, client: FediverseClient) -> None:
    token = fake.issue_token("alice", ACT)
    status_id = fake.seed_status("bob@remote.example", "nice post")["id"]
    instance, act = instance_of(fake), actions(client)
    await act.favourite(instance, token, status_id)
    await act.reblog(instance, token, status_id)
    assert fake.favourited("alice", status_id)
    assert fake.reblogged("alice", status_id)
    await act.unfavourite(instance, token, status_id)
    await act.unreblog(instance, token, status_id)
    assert not fake.favourited("alice", status_id)
    assert not fake.reblogged("alice", status_id)
    assert [p for _, p, _ in fake.write_calls] == [
        f"/api/v1/statuses/{status_id}/{verb}" for verb in ("favourite", "reblog", "unfavourite", "unreblog")
    ]


@ALL
async def test_status_of_a_notification_can_be_read_and_favourited(
    fake: FakeGoToSocial, client: FediverseClient
) -> None:
    token = fake.issue_token("alice", ACT)
    notification = fake.notify("alice", "mention", "bob@remote.example", status_text="@alice hi")
    instance = instance_of(fake)
    status = await actions(client).get_status(instance, token, notification["status"]["id"])
    await actions(client).favourite(instance, token, status.id)
    assert fake.favourited("alice", status.id)


@ALL
async def test_follow_requests_authorize_and_reject(fake: FakeGoToSocial, client: FediverseClient) -> None:
    token = fake.issue_token("alice", ACT)
    fake.notify("alice", "follow_request", "bob@remote.example")
    carol = fake.seed_follow_request("alice", "carol@third.example")
    bob = fake.pending_follow_requests("alice")[0]
    instance = instance_of(fake)
    await actions(client).authorize_follow_request(instance, token, bob)
    await actions(client).reject_follow_request(instance, token, carol)
    assert fake.pending_follow_requests("alice") == []
    assert fake.followers("alice") == {bob}
    with pytest.raises(RemoteNotFoundError):
        await actions(client).authorize_follow_request(instance, token, carol)


@ALL
async def test_read_only_token_is_refused_with_insufficient_scope(
    fake: FakeGoToSocial, client: FediverseClient
) -> None:
    token = fake.issue_token("alice", "read")
    status_id = fake.seed_status("bob@remote.example", "x")["id"]
    requester = fake.seed_follow_request("alice", "bob@remote.example")
    instance, act = instance_of(fake), actions(client)
    for attempt in (
        act.favourite(instance, token, status_id),
        act.reblog(instance, token, status_id),
        act.authorize_follow_request(instance, token, requester),
        act.post_status(instance, token, StatusDraft("hi"), idempotency_key=key()),
    ):
        with pytest.raises(InsufficientScopeError) as caught:
            await attempt
        assert token not in str(caught.value)
    assert len(fake.write_calls) == 4  # refused calls are recorded too
    assert not fake.favourited("alice", status_id)
    assert fake.pending_follow_requests("alice") == [requester]
    assert fake.posted_statuses("alice") == []


@ALL
async def test_granular_scope_covers_only_its_action(fake: FakeGoToSocial, client: FediverseClient) -> None:
    token = fake.issue_token("alice", "read write:favourites")
    status_id = fake.seed_status("bob@remote.example", "x")["id"]
    instance = instance_of(fake)
    await actions(client).favourite(instance, token, status_id)
    if fake.profile.reblog_scope == "write:favourites":
        # Iceshrimp.NET's StatusController boosts under write:favourites, not write:statuses.
        await actions(client).reblog(instance, token, status_id)
        token = fake.issue_token("alice", "read write:statuses")
    with pytest.raises(InsufficientScopeError):
        await actions(client).reblog(instance, token, status_id)


@pytest.mark.parametrize(
    ("profile", "accepted"),
    [(PROFILES["gotosocial"], False), (PROFILES["mastodon"], True), (PROFILES["akkoma"], True),
     (PROFILES["iceshrimp"], True)],
    ids=["gotosocial", "mastodon", "akkoma", "iceshrimp"],
)
async def test_legacy_follow_scope_for_follow_requests(
    fake: FakeGoToSocial, client: FediverseClient, accepted: bool
) -> None:
    token = fake.issue_token("alice", "read follow")
    requester = fake.seed_follow_request("alice", "bob@remote.example")
    call = actions(client).authorize_follow_request(instance_of(fake), token, requester)
    if accepted:
        await call
        assert fake.followers("alice") == {requester}
    else:
        with pytest.raises(InsufficientScopeError):
            await call


@ALL
async def test_errors_map_to_the_tree(fake: FakeGoToSocial, client: FediverseClient) -> None:
    token = fake.issue_token("alice", ACT)
    instance, act = instance_of(fake), actions(client)
    hidden = fake.seed_status("bob@remote.example", "only for carol", visibility="direct")["id"]
    with pytest.raises(RemoteNotFoundError):
        await act.get_status(instance, token, hidden)  # a post you may not see does not exist
    with pytest.raises(RemoteNotFoundError):
        await act.favourite(instance, token, "no-such-status")
    with pytest.raises(RemoteNotFoundError):
        await act.favourite(instance, token, "../../oauth/revoke")  # never put into a path
    followers_only = fake.seed_status("bob@remote.example", "@alice psst", visibility="private")["id"]
    with pytest.raises(ActionRefusedError):
        await act.reblog(instance, token, followers_only)
    too_long = "x" * (fake.profile.status_char_limit + 1)
    with pytest.raises(ActionRefusedError, match="refused to publish the post"):
        await act.post_status(instance, token, StatusDraft(too_long), idempotency_key=key())
    fake.revoke_all("alice")
    with pytest.raises(TokenRejectedError):
        await act.favourite(instance, token, followers_only)


@ALL
async def test_recent_own_statuses_and_default_visibility(
    fake: FakeGoToSocial, client: FediverseClient
) -> None:
    token = fake.issue_token("alice", ACT)
    instance = instance_of(fake)
    me = await client.verify_credentials(instance, token)
    assert me.default_visibility == "unlisted"
    first = await actions(client).post_status(instance, token, StatusDraft("one"), idempotency_key=key())
    second = await actions(client).post_status(
        instance, token, StatusDraft("two", visibility=Visibility.PUBLIC), idempotency_key=key()
    )
    recent = await actions(client).recent_own_statuses(instance, token, me.id, limit=5)
    assert [s.id for s in recent] == [second.id, first.id]
    assert [s.visibility for s in recent] == ["public", "unlisted"]  # unset → the account's default


@ALL
async def test_idempotency_key_per_server(fake: FakeGoToSocial, client: FediverseClient) -> None:
    """Mastodon and Akkoma answer a repeated key with the first post; GoToSocial posts again."""
    token = fake.issue_token("alice", ACT)
    instance, same = instance_of(fake), key()
    first = await actions(client).post_status(instance, token, StatusDraft("once"), idempotency_key=same)
    again = await actions(client).post_status(instance, token, StatusDraft("once"), idempotency_key=same)
    other = await actions(client).post_status(instance, token, StatusDraft("once"), idempotency_key=key())
    posted = fake.posted_statuses("alice")
    if fake.profile.idempotency == "ignored":
        assert len({first.id, again.id, other.id}) == 3
        assert len(posted) == 3
    else:
        assert again == first
        assert other.id != first.id
        assert len(posted) == 2
    assert len(fake.write_calls) == 3


async def test_akkoma_replays_any_cached_response_with_its_header() -> None:
    fake = await _fake(PROFILES["akkoma"])
    try:
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            status_id = fake.seed_status("bob@remote.example", "x")["id"]
            read_token = fake.issue_token("alice", "read")
            read_only = {"Authorization": f"Bearer {read_token}", "Idempotency-Key": "k1"}
            first = await http.post(f"/api/v1/statuses/{status_id}/favourite", headers=read_only)
            again = await http.post(f"/api/v1/statuses/{status_id}/favourite", headers=read_only)
            assert first.status_code == again.status_code == 403  # the refusal is cached and replayed
            assert "idempotent-replayed" not in first.headers
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == first.json()
            writer = {"Authorization": f"Bearer {fake.issue_token('alice', ACT)}", "Idempotency-Key": "k1"}
            other_token = await http.post(f"/api/v1/statuses/{status_id}/favourite", headers=writer)
            assert other_token.status_code == 200  # the cache is per token, method and path
            assert len(fake.write_calls) == 3
    finally:
        await fake.stop()


async def test_mastodon_remembers_the_key_per_account_and_ignores_it_elsewhere() -> None:
    fake = await _fake(PROFILES["mastodon"])
    try:
        fake.add_user("bob")
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            for user in ("alice", "bob", "alice"):
                headers = {"Authorization": f"Bearer {fake.issue_token(user, ACT)}", "Idempotency-Key": "k"}
                posted = await http.post("/api/v1/statuses", data={"status": "hi"}, headers=headers)
                assert posted.is_success
            status_id = fake.posted_statuses("alice")[0]["id"]
            headers = {"Authorization": f"Bearer {fake.issue_token('alice', ACT)}", "Idempotency-Key": "k"}
            await http.post(f"/api/v1/statuses/{status_id}/reblog", headers=headers)
            await http.post(f"/api/v1/statuses/{status_id}/unreblog", headers=headers)
            assert not fake.reblogged("alice", status_id)  # only posting looks at the key on Mastodon
        assert len(fake.posted_statuses("alice")) == 1
        assert len(fake.posted_statuses("bob")) == 1
    finally:
        await fake.stop()


async def test_a_server_that_echoes_the_token_or_sends_hostile_shapes_gets_no_secret_into_errors() -> None:
    """A hostile server quotes the bearer token back in its refusal and sends thousands of mentions."""
    token = "SECRET-TOKEN-" + uuid.uuid4().hex

    async def echo_refusal(request: web.Request) -> web.Response:
        return web.json_response({"error": f"bad {request.headers['Authorization']} \x1b[31m"}, status=422)

    async def hostile_status(request: web.Request) -> web.Response:
        mentions: list[object] = [{"acct": f"u{i}@x.example"} for i in range(5000)]
        return web.json_response(
            {
                "id": "S1",
                "account": {"id": "1", "username": "b", "acct": "b@x.example"},
                "mentions": [7, *mentions],
            }
        )

    app = web.Application()
    app.router.add_post("/api/v1/statuses", echo_refusal)
    app.router.add_get("/api/v1/statuses/S1", hostile_status)
    async with serve(app) as port, fedi_client(max_response_bytes=1024 * 1024) as client:
        instance = loopback(port)
        with pytest.raises(ActionRefusedError) as caught:
            await client.actions.post_status(instance, token, StatusDraft("hi"), idempotency_key=key())
        assert token not in str(caught.value)
        assert "\x1b" not in str(caught.value)
        status = await client.actions.get_status(instance, token, "S1")
    assert len(status.mentions) == MAX_MENTIONS - 1  # bounded; the entry that is not an object is skipped
