"""The OutboxWriter on a real, migrated database (SQLite and PostgreSQL): steps handed over together share
one transaction, each keeps its own outcome, and cursors only move forward."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator

import pytest
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.relay.delivery_store import LeaseLost
from bot.relay.outbox_writer import OutboxDraft, OutboxWriter
from bot.store.event_map import RelayedTarget
from bot.store.keyring import KeyRing
from bot.store.outbox import OutboxRepository
from bot.store.records import AccountId, AccountRecord
from bot.store.repositories import Repositories

USERS = [f"@user{n}:example.org" for n in range(6)]


async def _connect(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, users: list[str], *, with_dm: bool = True
) -> list[AccountRecord]:
    async with sessions() as s, s.begin():
        repos = Repositories(s, keyring)
        app = await repos.apps.get("https://gts.example", "read") or await repos.apps.add(
            instance="https://gts.example", scopes="read", client_id="c", client_secret="s"
        )
        accounts = []
        for user in users:
            if with_dm:
                await repos.dm_rooms.set(user, f"!dm-{user}")
            accounts.append(
                await repos.accounts.upsert(
                    matrix_user_id=user,
                    instance="https://gts.example",
                    app_id=app.id,
                    fediverse_account_id=user,
                    acct=f"{user[1:].split(':')[0]}@gts.example",
                    token=f"token-of-{user}",
                    scopes="read",
                )
            )
        return accounts


@pytest.fixture
def transactions(engine: AsyncEngine) -> Iterator[list[int]]:
    """How many transactions began on the engine while the test ran."""
    began: list[int] = []

    def count(connection: Connection) -> None:
        began.append(1)

    event.listen(engine.sync_engine, "begin", count)
    yield began
    event.remove(engine.sync_engine, "begin", count)


async def test_steps_handed_over_together_share_one_transaction(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, transactions: list[int]
) -> None:
    accounts = await _connect(sessions, keyring, USERS)
    writer = OutboxWriter(sessions, keyring)
    transactions.clear()
    written = await asyncio.gather(
        *(
            writer.write(a.matrix_user_id, [OutboxDraft(f"t{n}", f"body {n}", "<p>h</p>")], {a.id: "10"})
            for n, a in enumerate(accounts)
        )
    )
    assert len(transactions) == 1
    records = [batch[0] for batch in written if batch]
    assert [(r.matrix_user_id, r.room_id, r.txn_id, dict(r.cursors)) for r in records] == [
        (a.matrix_user_id, f"!dm-{a.matrix_user_id}", f"t{n}", {a.id: "10"}) for n, a in enumerate(accounts)
    ]

    transactions.clear()
    await asyncio.gather(*(writer.finish(r, f"$sent{n}") for n, r in enumerate(records)))
    assert len(transactions) == 1
    async with sessions() as s:
        repos = Repositories(s, keyring)
        assert await OutboxRepository(s, keyring).list_all() == []
        assert [(await repos.accounts.get(a.id)).cursor for a in accounts] == ["10"] * len(accounts)  # type: ignore[union-attr]


async def test_a_refused_step_fails_alone_and_the_others_are_written(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    accounts = await _connect(sessions, keyring, USERS[:3])
    refused = accounts[1].id

    async def guard(session: AsyncSession, account_ids: Collection[AccountId]) -> None:
        if refused in account_ids:
            raise LeaseLost(f"account {refused} is held by another worker")

    writer = OutboxWriter(sessions, keyring, write_guard=guard)
    outcomes = await asyncio.gather(
        *(writer.write(a.matrix_user_id, [OutboxDraft(f"t{a.id}", "b", "h")], {a.id: "7"}) for a in accounts),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], LeaseLost)
    assert [type(o) for o in (outcomes[0], outcomes[2])] == [list, list]
    async with sessions() as s:
        stored = await OutboxRepository(s, keyring).list_all()
    assert sorted(r.txn_id for r in stored) == sorted([f"t{accounts[0].id}", f"t{accounts[2].id}"])


async def test_a_user_without_a_dm_gets_none_and_nothing_is_written_for_them(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    [placed] = await _connect(sessions, keyring, USERS[:1])
    [homeless] = await _connect(sessions, keyring, USERS[1:2], with_dm=False)
    writer = OutboxWriter(sessions, keyring)
    there, nowhere = await asyncio.gather(
        writer.write(placed.matrix_user_id, [OutboxDraft("a", "b", "h")], {placed.id: "3"}),
        writer.write(homeless.matrix_user_id, [OutboxDraft("z", "b", "h")], {homeless.id: "3"}),
    )
    assert there is not None
    assert [r.txn_id for r in there] == ["a"]
    assert nowhere is None
    async with sessions() as s:
        assert [r.txn_id for r in await OutboxRepository(s, keyring).list_all()] == ["a"]
        assert (await Repositories(s, keyring).accounts.get(homeless.id)).cursor is None  # type: ignore[union-attr]


async def test_finishing_in_one_group_keeps_the_newest_cursor_and_maps_only_stored_accounts(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    kept, revoked = await _connect(sessions, keyring, USERS[:2])
    writer = OutboxWriter(sessions, keyring)
    newer = await writer.write(
        kept.matrix_user_id,
        [OutboxDraft("n9", "b", "h", RelayedTarget(kept.id, "9", "mention"))],
        {kept.id: "9"},
    )
    older = await writer.write(kept.matrix_user_id, [OutboxDraft("n4", "b", "h")], {kept.id: "4"})
    gone = await writer.write(
        revoked.matrix_user_id,
        [OutboxDraft("r5", "b", "h", RelayedTarget(revoked.id, "5", "mention"))],
        {revoked.id: "5"},
    )
    assert newer
    assert older
    assert gone
    async with sessions() as s, s.begin():
        await Repositories(s, keyring).accounts.delete(revoked.id)  # revoked while its message was in flight

    await asyncio.gather(
        writer.finish(newer[0], "$nine"), writer.finish(older[0], "$four"), writer.finish(gone[0], "$five")
    )
    async with sessions() as s:
        repos = Repositories(s, keyring)
        assert (await repos.accounts.get(kept.id)).cursor == "9"  # type: ignore[union-attr]
        assert await repos.relayed_events.get("$nine") is not None
        assert await repos.relayed_events.get("$five") is None
        assert await OutboxRepository(s, keyring).list_all() == []


async def test_a_step_cancelled_before_its_group_begins_is_skipped(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    [account] = await _connect(sessions, keyring, USERS[:1])
    writer = OutboxWriter(sessions, keyring)
    step = asyncio.create_task(writer.write(account.matrix_user_id, [OutboxDraft("c", "b", "h")], {}))
    await asyncio.sleep(0)  # the step is handed over; the writer has not begun its group yet
    step.cancel()
    await writer.wait_idle()
    assert step.cancelled()
    async with sessions() as s:
        assert await OutboxRepository(s, keyring).list_all() == []


async def test_a_finish_whose_delivery_is_stopped_still_finishes_its_sent_message(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> None:
    [account] = await _connect(sessions, keyring, USERS[:1])
    writer = OutboxWriter(sessions, keyring)
    [record] = (
        await writer.write(account.matrix_user_id, [OutboxDraft("s", "b", "h")], {account.id: "8"}) or []
    )
    finishing = asyncio.create_task(writer.finish(record, "$sent"))
    await asyncio.sleep(0)  # handed over; then the delivery is stopped (a shutdown cancels it)
    finishing.cancel()
    await writer.wait_idle()  # as `RelayManager.stop` does
    async with sessions() as s:
        assert await OutboxRepository(s, keyring).list_all() == []  # not sent again at the next start
        assert (await Repositories(s, keyring).accounts.get(account.id)).cursor == "8"  # type: ignore[union-attr]
