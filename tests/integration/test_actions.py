"""Acting from Matrix through the router: reactions, their redaction, replies and `post`, against the fake
server over loopback (every profile) with a real database and a recording Matrix side."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.actions.journal import ActionJournal, Started
from bot.actions.service import RESUME_WITHIN, ActionService
from bot.dm_registry import DmDirectory
from bot.fediverse.client import FediverseClient
from bot.fediverse.instance import parse_instance
from bot.fediverse.models import parse_notification
from bot.matrix.types import EventId, IncomingMessage, Reaction, Redaction, RoomId, UserId
from bot.relay.delivery_store import DeliveryStore
from bot.relay.event_targets import target_of
from bot.relay.outbox_writer import OutboxDraft, OutboxWriter
from bot.router import Router
from bot.router_ports import HandledEvents
from bot.store.action_journal import ActionState
from bot.store.keyring import KeyRing
from bot.store.models import Account, ActionJournalEntry
from bot.store.records import AccountRecord, utc_now
from bot.store.repositories import Repositories
from bot.store.session_store import DatabaseHandledEvents
from tests.fakes.gotosocial import PROFILES, FakeGoToSocial, Profile
from tests.fakes.matrix import RecordingMatrix
from tests.integration.fedi_support import fedi_client
from tests.integration.router_support import AlwaysNew, Relay, Rooms, command_side, message

ALL = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
ACT = "read write:statuses write:favourites write:follows"
ALICE, EVE = "@alice:hs.test", "@eve:hs.test"
DM, GROUP = "!dm:hs.test", "!group:hs.test"


class StartFails(ActionJournal):
    """The bot stops after taking the event from the sync but before its action's turn came (`failures`
    times)."""

    def __init__(self, ground: Ground, *, failures: int = 1) -> None:
        super().__init__(ground.sessions, ground.keyring)
        self.failures = failures

    async def start(self, **kwargs: Any) -> Started:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the bot stopped here")
        return await super().start(**kwargs)


class FinishFails(ActionJournal):
    """The bot stops between the server call and `finish` (`failures` times): the entry stays pending."""

    def __init__(self, ground: Ground, *, failures: int = 1) -> None:
        super().__init__(ground.sessions, ground.keyring)
        self.failures = failures

    async def finish(self, event_id: str, *, result_id: str | None = None, url: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the bot stopped here")
        await super().finish(event_id, result_id=result_id, url=url)


@dataclass(frozen=True)
class Ground:
    """What every bot of a test stands on: one database, key ring, fake server and client (a restarted
    bot is built on the same ground)."""

    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    fake: FakeGoToSocial
    client: FediverseClient


@dataclass
class World:
    ground: Ground
    account: AccountRecord
    matrix: RecordingMatrix
    router: Router
    actions: ActionService
    relayed: int = 0

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.ground.sessions

    @property
    def keyring(self) -> KeyRing:
        return self.ground.keyring

    @property
    def fake(self) -> FakeGoToSocial:
        return self.ground.fake

    async def relay(self, notification: dict[str, Any]) -> EventId:
        """Deliver a notification as the relay does: an outbox row, then the commit that maps it."""
        self.relayed += 1
        parsed = parse_notification(notification)
        store = DeliveryStore(self.sessions, OutboxWriter(self.sessions, self.keyring), ALICE)
        draft = OutboxDraft(f"txn{self.relayed}", "body", "<p>body</p>", target_of(self.account.id, parsed))
        records = await store.write_batch([draft], {})
        assert records is not None
        event_id = EventId(f"$relayed{self.relayed}")
        await store.commit(records[0], sent_as=event_id)
        return event_id

    async def handle(self, *events: IncomingMessage | Reaction | Redaction) -> None:
        for event in events:
            await self.router.handle(event)
        await self.router.settled()

    def said(self) -> list[str]:
        return self.matrix.bodies()


def reaction(key: str, on: str, event: str, *, sender: str = ALICE, room: str = DM) -> Reaction:
    return Reaction(RoomId(room), EventId(event), UserId(sender), EventId(on), key)


def reply(text: str, to: str, event: str, *, sender: str = ALICE, room: str = DM) -> IncomingMessage:
    body = f"> <@bot:hs.test> body\n\n{text}"
    return IncomingMessage(
        RoomId(room), EventId(event), UserId(sender), body, None, "m.text", True, 0, reply_to=EventId(to)
    )


def command(text: str, event: str, *, room: str = DM) -> IncomingMessage:
    return message(ALICE, room, text, event)


async def build_world(
    ground: Ground,
    *,
    scopes: str = ACT,
    journal: ActionJournal | None = None,
    software: str | None = None,
    handled: HandledEvents | None = None,
    dm_is_private: bool = True,
) -> World:
    sessions, keyring, fake, client = ground.sessions, ground.keyring, ground.fake, ground.client
    token = fake.issue_token("alice", scopes)
    instance = parse_instance(fake.base_url, allow_http=True)
    me = await client.verify_credentials(instance, token)
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.get(instance.key, scopes) or await repos.apps.add(
            instance=instance.key, scopes=scopes, client_id="cid", client_secret="cs"
        )
        account = await repos.accounts.upsert(
            matrix_user_id=ALICE,
            instance=instance.key,
            app_id=app.id,
            fediverse_account_id=me.id,
            acct=me.acct,
            token=token,
            scopes=scopes,
            software=software,
        )
        await repos.dm_rooms.set(ALICE, DM)
    matrix = RecordingMatrix()
    side = command_side(
        sessions,
        keyring,
        client,
        matrix=matrix,
        dms=DmDirectory(sessions, Rooms({(DM, ALICE)} if dm_is_private else set())),
        relay=Relay(),
        handled=handled or AlwaysNew(),
        journal=journal,
    )
    return World(ground, account, matrix, side.router, side.actions)


async def restart_and_resume(world: World) -> World:
    """A new bot on the same database and server, after it resumed what the journal left pending."""
    restarted = await build_world(world.ground)
    await restarted.router.resume_actions()
    await restarted.router.settled()
    return restarted


@pytest.fixture
async def fake(profile: Profile) -> AsyncIterator[FakeGoToSocial]:
    server = FakeGoToSocial(profile=profile)
    await server.start()
    server.add_user("alice")
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[FediverseClient]:
    async with fedi_client() as c:
        yield c


@pytest.fixture
def ground(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    fake: FakeGoToSocial,
    client: FediverseClient,
) -> Ground:
    return Ground(sessions, keyring, fake, client)


@pytest.fixture
async def world(ground: Ground) -> World:
    return await build_world(ground)


def writes(fake: FakeGoToSocial, method: str = "POST") -> list[str]:
    return [path for m, path, _ in fake.write_calls if m == method]


def posted_replies(fake: FakeGoToSocial) -> list[dict[str, Any]]:
    return [s for s in fake.posted_statuses("alice") if s.get("in_reply_to_id")]


@ALL
async def test_a_matrix_reply_becomes_a_reply_with_mentions_visibility_and_cw(world: World) -> None:
    fake = world.fake
    fake.seed_status("carol@third.example", "hi")  # known to the server, so a mention of her resolves
    notification = fake.notify(
        "alice",
        "mention",
        "bob@remote.example",
        status_text="@alice @carol@third.example lunch?",
        spoiler_text="food",
    )
    status_id = notification["status"]["id"]
    fake.state.writes.statuses[status_id].body["visibility"] = "private"
    relayed = await world.relay(notification)

    await world.handle(reply("<b>yes</b> please", relayed, "$reply1"))

    [posted] = posted_replies(fake)
    assert posted["in_reply_to_id"] == status_id
    assert posted["visibility"] == "private"  # never wider than the original
    assert posted["spoiler_text"] == "food"
    mentioned = {m["acct"] for m in posted["mentions"]}
    assert "bob@remote.example" in mentioned
    [confirmation] = world.said()
    assert confirmation.startswith("Replied as @")
    assert posted["url"] in confirmation

    public = await world.relay(fake.notify("alice", "mention", "bob@remote.example", status_text="@alice hi"))
    await world.handle(reply("hello", public, "$reply2"))
    assert posted_replies(fake)[-1]["visibility"] == "unlisted"  # the account's default is narrower


@ALL
async def test_star_favourites_boost_boosts_and_removing_them_undoes(world: World) -> None:
    fake = world.fake
    notification = fake.notify("alice", "mention", "bob@remote.example", status_text="@alice look")
    status_id = notification["status"]["id"]
    relayed = await world.relay(notification)

    await world.handle(reaction("⭐", relayed, "$star"), reaction("🔁", relayed, "$boost"))
    assert fake.favourited("alice", status_id)
    assert fake.reblogged("alice", status_id)

    await world.handle(Redaction(RoomId(DM), EventId("$unstar"), UserId(ALICE), EventId("$star")))
    assert not fake.favourited("alice", status_id)
    assert fake.reblogged("alice", status_id)
    await world.handle(Redaction(RoomId(DM), EventId("$unboost"), UserId(ALICE), EventId("$boost")))
    assert not fake.reblogged("alice", status_id)
    assert [s.split(" as ")[0] for s in world.said()] == [
        "Favourited",
        "Boosted",
        "Removed the favourite",
        "Undid the boost",
    ]


@ALL
async def test_check_mark_accepts_a_follow_request_and_a_reply_rejects_another(world: World) -> None:
    fake = world.fake
    first = fake.seed_follow_request("alice", "dave@remote.example")
    second = fake.seed_follow_request("alice", "mallory@remote.example")
    one = await world.relay(fake.notify("alice", "follow_request", "dave@remote.example"))
    other = await world.relay(fake.notify("alice", "follow_request", "mallory@remote.example"))

    await world.handle(reaction("✅", one, "$yes"), reply("Reject", other, "$no"))

    assert fake.pending_follow_requests("alice") == []
    assert first in fake.followers("alice")
    assert second not in fake.followers("alice")
    assert world.said() == [
        f"Accepted the follow request as @{world.account.acct}.",
        f"Rejected the follow request as @{world.account.acct}.",
    ]


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_a_read_only_account_gets_one_hint_and_the_server_no_write_call(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    world = await build_world(ground, scopes="read")
    relayed = await world.relay(fake.notify("alice", "mention", "bob@remote.example", status_text="@alice x"))

    await world.handle(
        reaction("⭐", relayed, "$a"), reaction("🔁", relayed, "$b"), reply("hello", relayed, "$c")
    )

    assert fake.write_calls == []
    [hint] = world.said()
    assert "read-only" in hint
    assert "!gts allow-actions" in hint


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_what_is_not_the_owners_in_their_dm_on_a_relayed_message_does_nothing(world: World) -> None:
    fake = world.fake
    relayed = await world.relay(fake.notify("alice", "mention", "bob@remote.example", status_text="@alice x"))
    await world.handle(
        reaction("⭐", relayed, "$eve", sender=EVE),  # someone else, in the same room
        reaction("⭐", relayed, "$group", room=GROUP),  # the owner, but not in their DM
        reaction("⭐", "$not-relayed", "$other"),  # a message the bot did not relay
        reply("hi", "$not-relayed", "$r1"),  # a reply to something else
        reaction("😂", relayed, "$laugh"),  # not an action key
        Redaction(RoomId(DM), EventId("$x"), UserId(EVE), EventId("$eve")),
    )
    assert fake.write_calls == []
    assert world.said() == []

    await world.handle(reaction("⭐", relayed, "$mine"))  # the positive marker: the owner's own does act
    assert len(writes(fake)) == 1


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_reactions_and_replies_in_group_rooms_do_not_spend_the_owners_command_budget(
    world: World,
) -> None:
    """The budget is 100 a minute (the clock stands still): far more group-room chatter than that must
    not cost the owner the reaction they then place in their DM."""
    fake = world.fake
    relayed = await world.relay(fake.notify("alice", "mention", "bob@remote.example", status_text="@alice x"))
    chatter = [reaction("⭐", relayed, f"$group{i}", room=GROUP) for i in range(120)]
    chatter += [reply("ha", "$a-group-message", f"$groupreply{i}", room=GROUP) for i in range(120)]
    await world.handle(*chatter)
    assert fake.write_calls == []

    await world.handle(reaction("⭐", relayed, "$in-the-dm"))
    assert len(writes(fake)) == 1
    assert [s.split(" as ")[0] for s in world.said()] == ["Favourited"]


@ALL
async def test_a_crash_after_the_server_call_and_a_replayed_event_post_once(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    journal = FinishFails(ground)
    world = await build_world(ground, journal=journal)
    relayed = await world.relay(fake.notify("alice", "mention", "bob@remote.example", status_text="@alice q"))
    answer = reply("an answer", relayed, "$reply")

    await world.handle(answer)  # posted, but the journal was not finished
    assert len(posted_replies(fake)) == 1
    async with ground.sessions() as s:
        entry = await Repositories(s, ground.keyring).action_journal.get("$reply")
    assert entry is not None
    assert entry.state is ActionState.PENDING

    await world.handle(answer)  # the replayed sync
    await world.handle(answer)  # and once more, now that it is done
    assert len(posted_replies(fake)) == 1
    async with ground.sessions() as s:
        entry = await Repositories(s, ground.keyring).action_journal.get("$reply")
    assert entry is not None
    assert entry.state is ActionState.DONE
    assert len([b for b in world.said() if b.startswith("Replied")]) == 1


@ALL
async def test_post_uses_the_named_visibility_or_the_accounts_default_once_per_command(world: World) -> None:
    fake = world.fake
    await world.handle(command("!gts post private hello\nworld", "$p1"), command("!gts post plain", "$p2"))
    await world.handle(command("!gts post private hello\nworld", "$p1"))  # replayed: not posted again
    first, second = fake.posted_statuses("alice")  # exactly two
    assert first["visibility"] == "private"
    assert "hello" in first["content"]
    assert "world" in first["content"]
    assert second["visibility"] == "unlisted"  # the fake's `source.privacy`
    assert all(b.startswith("Posted as @") for b in world.said())


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_revoke_and_forget_me_delete_the_event_map_and_journal(world: World) -> None:
    relayed = await world.relay(world.fake.notify("alice", "mention", "bob@remote.example", status_text="x"))
    await world.handle(reaction("⭐", relayed, "$star"))
    async with world.sessions() as s, s.begin():
        repos = Repositories(s, world.keyring)
        assert await repos.relayed_events.count_for_user(ALICE) == 1
        assert await repos.action_journal.get("$star") is not None
        await repos.delete_account(world.account.id)
    async with world.sessions() as s:
        repos = Repositories(s, world.keyring)
        assert await repos.relayed_events.get(relayed) is None
        assert await repos.action_journal.get("$star") is None


@pytest.mark.parametrize("profile", [PROFILES["gotosocial"]], ids=["gotosocial"])
async def test_after_a_restart_unfinished_reactions_and_replies_are_finished_without_their_event(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    journal = FinishFails(ground, failures=2)
    world = await build_world(ground, journal=journal)
    notification = fake.notify("alice", "mention", "bob@remote.example", status_text="@alice x")
    relayed = await world.relay(notification)
    await world.handle(reaction("⭐", relayed, "$star"), reply("answer", relayed, "$reply"))
    assert fake.favourited("alice", notification["status"]["id"])
    assert not any(b.startswith(("Favourited", "Replied")) for b in world.said())

    restarted = await restart_and_resume(world)  # same database, a new bot

    [posted] = posted_replies(fake)  # found among the recent statuses, not posted again
    assert sorted(restarted.said()) == [
        f"Favourited as @{world.account.acct}.",
        f"Replied as @{world.account.acct}: {posted['url']}",
    ]
    async with ground.sessions() as s:
        repos = Repositories(s, ground.keyring)
        star, answer = await repos.action_journal.get("$star"), await repos.action_journal.get("$reply")
    assert star is not None
    assert star.state is ActionState.DONE
    assert answer is not None
    assert answer.state is ActionState.DONE
    assert answer.text is None  # the text is kept only until the reply is done


@ALL
async def test_a_reply_taken_from_the_sync_whose_turn_never_came_is_posted_once_after_a_restart(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    world = await build_world(ground, journal=StartFails(ground))
    notification = fake.notify("alice", "mention", "bob@remote.example", status_text="@alice lunch?")
    relayed = await world.relay(notification)
    await world.handle(reply("a secret place", relayed, "$reply"))  # the sync token moved past it
    assert fake.write_calls == []
    assert not any(b.startswith("Replied") for b in world.said())
    async with ground.sessions() as s:
        raw = await s.get(ActionJournalEntry, "$reply")
        assert raw is not None
        assert raw.text_encrypted is not None
        assert "secret" not in raw.text_encrypted  # encrypted at rest

    restarted = await restart_and_resume(world)
    await restarted.router.resume_actions()  # a second restart finds nothing left to do
    await restarted.router.settled()

    [posted] = posted_replies(fake)
    assert posted["in_reply_to_id"] == notification["status"]["id"]
    assert "a secret place" in posted["content"]
    assert restarted.said() == [f"Replied as @{world.account.acct}: {posted['url']}"]


@ALL
async def test_reactions_taken_from_the_sync_whose_turn_never_came_are_done_after_a_restart(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    journal = StartFails(ground, failures=2)
    world = await build_world(ground, journal=journal)
    notification = fake.notify("alice", "mention", "bob@remote.example", status_text="@alice look")
    relayed = await world.relay(notification)
    requester = fake.seed_follow_request("alice", "dave@remote.example")
    request = await world.relay(fake.notify("alice", "follow_request", "dave@remote.example"))
    await world.handle(reaction("⭐", relayed, "$star"), reaction("✅", request, "$yes"))
    assert fake.write_calls == []

    restarted = await restart_and_resume(world)

    assert fake.favourited("alice", notification["status"]["id"])
    assert requester in fake.followers("alice")
    assert sorted(restarted.said()) == [
        f"Accepted the follow request as @{world.account.acct}.",
        f"Favourited as @{world.account.acct}.",
    ]


@ALL
async def test_a_replayed_post_command_after_a_crash_is_confirmed_once_with_its_link(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    handled = DatabaseHandledEvents(ground.sessions)
    world = await build_world(ground, journal=FinishFails(ground), handled=handled)
    post = command("!gts post private back from lunch", "$post")
    await world.handle(post)  # posted, but the bot stopped before noting it done and confirming
    assert len(fake.posted_statuses("alice")) == 1
    assert not any(b.startswith("Posted") for b in world.said())

    restarted = await build_world(ground, handled=handled)
    await restarted.handle(post)  # the replayed sync: already handled as a command
    await restarted.router.resume_actions()
    await restarted.router.settled()
    await restarted.handle(post)

    [status] = fake.posted_statuses("alice")
    assert status["visibility"] == "private"
    assert restarted.said() == [f"Posted as @{world.account.acct}: {status['url']}"]


@ALL
async def test_resuming_is_bounded_to_the_last_day(ground: Ground, fake: FakeGoToSocial) -> None:
    world = await build_world(ground, journal=StartFails(ground, failures=2))  # neither post's turn came
    await world.handle(command("!gts post too late", "$old"))
    async with ground.sessions() as s, s.begin():
        raw = await s.get(ActionJournalEntry, "$old")
        assert raw is not None
        raw.created_at = utc_now() - RESUME_WITHIN - timedelta(minutes=1)
    await world.handle(command("!gts post in time", "$new"))  # the marker that resuming ran
    assert fake.write_calls == []

    restarted = await restart_and_resume(world)

    [status] = fake.posted_statuses("alice")
    assert "in time" in status["content"]
    assert len(restarted.said()) == 1


@pytest.mark.parametrize("profile", [PROFILES["mastodon"], PROFILES["akkoma"]], ids=["mastodon", "akkoma"])
async def test_the_legacy_follow_scope_answers_follow_requests_where_the_server_takes_it(
    ground: Ground, fake: FakeGoToSocial, profile: Profile
) -> None:
    scopes = "read write:statuses write:favourites follow"
    world = await build_world(ground, scopes=scopes, software=profile.software)
    requester = fake.seed_follow_request("alice", "dave@remote.example")
    relayed = await world.relay(fake.notify("alice", "follow_request", "dave@remote.example"))

    await world.handle(reaction("✅", relayed, "$yes"))

    assert requester in fake.followers("alice")
    assert world.said() == [f"Accepted the follow request as @{world.account.acct}."]


async def journaled(world: World, *event_ids: str) -> list[str]:
    async with world.sessions() as s:
        return [e for e in event_ids if await s.get(ActionJournalEntry, e) is not None]


@ALL
async def test_post_typed_outside_the_dm_publishes_nothing_and_says_so_in_the_dm(world: World) -> None:
    await world.handle(command("!gts post hello everyone in the group", "$group", room=GROUP))

    assert world.fake.posted_statuses("alice") == []
    assert await journaled(world, "$group") == []
    [(room, here), (dm, told)] = world.matrix.messages()
    assert (room, here) == (GROUP, "I've sent you a direct message.")
    assert dm == DM
    assert told.startswith("post only works here, in our direct chat")
    assert "hello everyone" not in told

    restarted = await restart_and_resume(world)
    await restarted.handle(command("!gts post from the dm", "$dm"))  # the positive marker
    [status] = world.fake.posted_statuses("alice")
    assert "from the dm" in status["content"]


@ALL
async def test_refused_posts_leave_nothing_for_a_restart_to_publish(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    world = await build_world(ground)
    await world.handle(command("!gts post " + "long " * 2000, "$long"))
    # Noted at intake while the account could act, refused at its turn because it no longer can.
    await world.actions.note_post(ALICE, DM, "$read-only", "now read-only")
    async with ground.sessions() as s, s.begin():
        row = await s.get(Account, int(world.account.id))
        assert row is not None
        row.scopes = "read"
    await world.handle(command("!gts post now read-only", "$read-only"))
    too_long, read_only = world.said()
    assert too_long == "That command is too long."
    assert read_only.startswith(f"@{world.account.acct} is connected read-only")
    async with ground.sessions() as s, s.begin():
        row = await s.get(Account, int(world.account.id))
        assert row is not None
        row.scopes = ACT  # the user allows actions again
    # The recorded DM is no longer a private room: noted at intake, refused when the command runs.
    unprivate = await build_world(ground, dm_is_private=False)
    await unprivate.handle(command("!gts post not for the room", "$unprivate"))
    assert fake.posted_statuses("alice") == []

    restarted = await restart_and_resume(world)

    assert fake.posted_statuses("alice") == []
    assert restarted.said() == []
    assert await journaled(world, "$long", "$read-only", "$unprivate") == []
    await restarted.handle(command("!gts post the marker", "$marker"))  # posting itself still works
    assert len(fake.posted_statuses("alice")) == 1


@ALL
async def test_a_confirmation_links_only_a_safe_url_from_the_server(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    world = await build_world(ground, journal=FinishFails(ground))
    await world.handle(command("!gts post found again after a crash", "$post"))
    [status] = fake.posted_statuses("alice")
    status["url"] = "javascript:alert(1)"  # what the server now says the post's address is

    restarted = await restart_and_resume(world)

    assert len(fake.posted_statuses("alice")) == 1  # found among the recent statuses
    assert restarted.said() == [f"Posted as @{world.account.acct}."]
    assert all("javascript" not in e.html for e in restarted.matrix.events)
    async with ground.sessions() as s:
        entry = await Repositories(s, ground.keyring).action_journal.get("$post")
    assert entry is not None
    assert entry.state is ActionState.DONE
    assert entry.result_url is None


@ALL
async def test_removing_a_reaction_taken_from_the_sync_whose_turn_never_came_is_undone_after_a_restart(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    journal = StartFails(ground, failures=0)
    world = await build_world(ground, journal=journal)
    notification = fake.notify("alice", "mention", "bob@remote.example", status_text="@alice look")
    status_id = notification["status"]["id"]
    relayed = await world.relay(notification)
    await world.handle(reaction("⭐", relayed, "$star"))
    assert fake.favourited("alice", status_id)

    journal.failures = 1
    await world.handle(Redaction(RoomId(DM), EventId("$unstar"), UserId(ALICE), EventId("$star")))
    assert fake.favourited("alice", status_id)  # the sync token moved past it, the bot stopped

    restarted = await restart_and_resume(world)

    assert not fake.favourited("alice", status_id)
    assert restarted.said() == [f"Removed the favourite as @{world.account.acct}."]


@ALL
async def test_a_code_pasted_as_a_reply_to_the_bot_completes_the_connection(
    ground: Ground, fake: FakeGoToSocial
) -> None:
    matrix = RecordingMatrix()
    side = command_side(
        ground.sessions,
        ground.keyring,
        ground.client,
        matrix=matrix,
        dms=DmDirectory(ground.sessions, Rooms({(DM, ALICE)})),
        relay=Relay(),
    )
    flows, accounts, router = side.flows, side.accounts, side.router
    await router.handle(command(f"!gts connect {fake.base_url}", "$connect"))
    await router.settled()
    [(_, started)] = matrix.messages()
    url = re.search(r"https?://\S+/oauth/authorize\?\S+", started)
    assert url is not None
    code = await fake.authorize(url.group(0).rstrip(").,"), "alice@example.org", "Long-Strong-Passw0rd!")

    # Wrapped over two lines as copied, so not code-shaped on its own, but a reply to the bot in the DM.
    await router.handle(reply(f"{code[:8]}\n{code[8:]}", "$the-bots-question", "$pasted"))
    await router.settled()

    assert "Connected as" in matrix.bodies()[-1]
    [account] = await accounts.for_user(ALICE)
    assert account.acct.startswith("alice")
    assert not await flows.has_pending(ALICE)
