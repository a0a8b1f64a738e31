"""The event map and the action journal on a real, migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.delivery_store import DeliveryStore
from bot.relay.outbox_writer import OutboxDraft, OutboxWriter
from bot.store.action_journal import ActionKind, ActionState, Intent
from bot.store.event_map import RelayedTarget
from bot.store.keyring import KeyRing
from bot.store.models import ActionJournalEntry
from bot.store.outbox import OutboxRepository
from bot.store.records import AccountId, AccountRecord
from bot.store.repositories import Repositories

ALICE, BOB = "@alice:example.org", "@bob:example.org"
DM = "!dm:example.org"
T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


async def _account(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, user: str) -> AccountRecord:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.get("https://gts.example", "read") or await repos.apps.add(
            instance="https://gts.example", scopes="read", client_id="cid", client_secret="cs"
        )
        await repos.dm_rooms.set(user, DM)
        return await repos.accounts.upsert(
            matrix_user_id=user,
            instance="https://gts.example",
            app_id=app.id,
            fediverse_account_id=user,
            acct=f"{user[1:].split(':')[0]}@gts.example",
            token=f"token-of-{user}",
            scopes="read",
        )


def _target(account: AccountRecord, notification: str = "n1") -> RelayedTarget:
    return RelayedTarget(account.id, notification, "mention", status_id=f"s-{notification}")


async def test_commit_maps_the_sent_event_once_and_the_outbox_carries_the_target_until_then(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    account = await _account(sessions, keyring, ALICE)
    store = DeliveryStore(sessions, OutboxWriter(sessions, keyring), ALICE)
    drafts = [OutboxDraft("t1", "b", "h", _target(account)), OutboxDraft("t2", "b", "h")]
    first, grouped = await store.write_batch(drafts, {account.id: "n2"}) or []
    async with sessions() as s:
        waiting = await OutboxRepository(s, keyring).list_all()
    assert [r.shows for r in waiting] == [_target(account), None]  # what a restart re-sends

    await store.commit(first, sent_as="$one")
    await store.commit(grouped, sent_as="$two")
    async with sessions() as s:
        repos = Repositories(s, keyring)
        mapped = await repos.relayed_events.get("$one")
        assert await repos.relayed_events.get("$two") is None
        assert await OutboxRepository(s, keyring).list_all() == []
    assert mapped is not None
    assert (mapped.matrix_user_id, mapped.room_id, mapped.target) == (ALICE, DM, _target(account))

    # a re-sent row the homeserver deduplicated to the same event keeps the first mapping
    again = await store.write_batch([OutboxDraft("t3", "b", "h", _target(account, "n9"))], {})
    assert again is not None
    await store.commit(again[0], sent_as="$one")
    async with sessions() as s:
        kept = await Repositories(s, keyring).relayed_events.get("$one")
    assert kept is not None
    assert kept.target == _target(account)


async def test_a_message_of_an_account_revoked_meanwhile_is_not_mapped(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    account = await _account(sessions, keyring, ALICE)
    store = DeliveryStore(sessions, OutboxWriter(sessions, keyring), ALICE)
    [record] = await store.write_batch([OutboxDraft("t1", "b", "h", _target(account))], {}) or []
    async with sessions() as s, s.begin():
        assert await Repositories(s, keyring).delete_account(account.id)
    await store.commit(record, sent_as="$late")
    async with sessions() as s:
        assert await Repositories(s, keyring).relayed_events.get("$late") is None
        assert await OutboxRepository(s, keyring).list_all() == []


async def test_the_journal_begins_once_finishes_forgets_and_prunes(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    account = await _account(sessions, keyring, ALICE)
    now = [T0]
    async with sessions() as s, s.begin():
        journal = Repositories(s, keyring, lambda: now[0]).action_journal
        entry = await journal.begin(
            event_id="$r", matrix_user_id=ALICE, account_id=account.id, action=ActionKind.REPLY,
            target_id="s1", idempotency_key="k1",
        )  # fmt: skip
        assert entry.state is ActionState.PENDING
        again = await journal.begin(
            event_id="$r", matrix_user_id=ALICE, account_id=account.id, action=ActionKind.POST,
            target_id=None, idempotency_key="other",
        )  # fmt: skip
        assert again == entry  # the first entry stands
        await journal.begin(
            event_id="$f", matrix_user_id=ALICE, account_id=account.id, action=ActionKind.FAVOURITE,
            target_id="s1", idempotency_key="k2",
        )  # fmt: skip
    now[0] = T0 + timedelta(seconds=5)
    async with sessions() as s, s.begin():
        journal = Repositories(s, keyring, lambda: now[0]).action_journal
        assert await journal.finish("$r", result_id="p1", result_url="https://gts.example/p1")
        assert await journal.forget("$f")
        assert not await journal.forget("$r")  # a done entry is kept
    async with sessions() as s, s.begin():
        journal = Repositories(s, keyring).action_journal
        done = await journal.get("$r")
        assert done is not None
        assert (done.state, done.result_id, done.finished_at) == (ActionState.DONE, "p1", now[0])
        assert await journal.get("$f") is None
        assert await journal.pending() == []
        assert await journal.prune(T0 + timedelta(seconds=1)) == 1
        assert await journal.get("$r") is None


async def test_forget_me_deletes_only_that_users_map_and_journal(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    alice, bob = await _account(sessions, keyring, ALICE), await _account(sessions, keyring, BOB)
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        for user, account in ((ALICE, alice), (BOB, bob)):
            await repos.relayed_events.add(
                event_id=f"$m-{user}", matrix_user_id=user, room_id=DM, target=_target(account)
            )
            await repos.action_journal.begin(
                event_id=f"$a-{user}", matrix_user_id=user, account_id=AccountId(account.id),
                action=ActionKind.FAVOURITE, target_id="s", idempotency_key="k",
            )  # fmt: skip
    async with sessions() as s, s.begin():
        await Repositories(s, keyring).delete_user_actions(ALICE)
    async with sessions() as s:
        repos = Repositories(s, keyring)
        assert await repos.relayed_events.count_for_user(ALICE) == 0
        assert await repos.action_journal.get(f"$a-{ALICE}") is None
        assert await repos.relayed_events.count_for_user(BOB) == 1
        assert await repos.action_journal.get(f"$a-{BOB}") is not None


async def test_a_reply_noted_at_intake_keeps_its_text_sealed_until_done_or_too_old(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    account = await _account(sessions, keyring, ALICE)
    now = [T0]
    async with sessions() as s, s.begin():
        journal = Repositories(s, keyring, lambda: now[0]).action_journal
        for event_id in ("$kept", "$stale", "$done"):
            intent = Intent(event_id, ALICE, account.id, ActionKind.REPLY, "s1", "k", text=f"text {event_id}")
            assert await journal.receive(intent)
        assert not await journal.receive(Intent("$kept", ALICE, account.id, ActionKind.POST, None, "x"))
        assert await journal.finish("$done")
    async with sessions() as s, s.begin():
        journal = Repositories(s, keyring, lambda: now[0]).action_journal
        kept = await journal.get("$kept")
        assert kept is not None
        assert (kept.action, kept.text, kept.started) == (ActionKind.REPLY, "text $kept", False)
        assert await journal.mark_started("$kept")
        assert not await journal.mark_started("$kept")
        done = await journal.get("$done")
        assert done is not None
        assert done.text is None  # cleared once posted
        stale = await s.get(ActionJournalEntry, "$stale")
        assert stale is not None
        stale.created_at = T0 - timedelta(days=2)
    async with sessions() as s, s.begin():
        journal = Repositories(s, keyring).action_journal
        assert await journal.forget_texts(T0 - timedelta(days=1)) == 1
        stale_entry, kept = await journal.get("$stale"), await journal.get("$kept")
        assert stale_entry is not None
        assert stale_entry.text is None
        assert kept is not None
        assert kept.started
        assert kept.text == "text $kept"
