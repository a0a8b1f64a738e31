"""The outbox writes of every user's delivery, grouped into shared transactions.

A relayed notification takes two database steps: its message is written to the outbox before it is sent
(`write`), and finished after (`finish`: its cursors move, the sent event is mapped, the row goes). Each
step used to be a transaction of its own, several statements long, and every statement costs a few
round trips between the event loop and aiosqlite's thread: at 50 notifications a second on 10,000
accounts that was most of the relay's CPU, and the transactions queued for the one SQLite writer.

Now a delivery hands its step to the `OutboxWriter` and waits for it. The writer runs every step handed
over meanwhile in one transaction, with one statement per kind of row whatever the number of users, so
the busier the relay, the larger the groups and the cheaper each notification. A lone step costs what
it did before.

Each step keeps its own outcome: when a group fails (a `LeaseLost` from the write guard, a database
error), its steps are run again one at a time. A write whose caller is cancelled before its group begins
is skipped; one already in a group is committed with it (after a shutdown its row is found in the outbox
at the next start, as after a crash, and sent once). A finish always runs: its message is in the room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.relay.ids import is_newer
from bot.store.db import take_write_lock
from bot.store.event_map import RelayedEventsRepository, RelayedTarget, SentMessage
from bot.store.keyring import KeyRing
from bot.store.outbox import NewOutboxRow, OutboxRecord, OutboxRepository
from bot.store.records import AccountId
from bot.store.repositories import AccountsRepository, DmRoomsRepository

__all__ = ["OutboxDraft", "OutboxWriter", "WriteGuard", "advance_cursors", "newest_cursors"]

MAX_STEPS_PER_TRANSACTION = 256

WriteGuard = Callable[[AsyncSession, Collection[AccountId]], Awaitable[None]]
"""Runs inside an outbox/cursor write for these accounts; raises `LeaseLost` to refuse it."""


@dataclass(frozen=True)
class OutboxDraft:
    """A message about to be written to the outbox."""

    txn_id: str
    body: str
    html: str
    shows: RelayedTarget | None = None  # the one notification it shows, for the event map


@dataclass(eq=False)
class _Write:
    """Write a user's messages, the cursors riding on the last one (moved at once when there is none)."""

    user: str
    drafts: Sequence[OutboxDraft]
    cursors: Mapping[AccountId, str]
    done: asyncio.Future[list[OutboxRecord] | None] = field(repr=False)


@dataclass(eq=False)
class _Finish:
    """A message is done (sent as `sent_as`, or given up): commit its cursors, map it, delete it."""

    record: OutboxRecord
    sent_as: str | None
    done: asyncio.Future[None] = field(repr=False)


_Step = _Write | _Finish


def newest_cursors(cursor_sets: Iterable[Mapping[AccountId, str]]) -> dict[AccountId, str]:
    """The newest cursor of each account over these sets."""
    newest: dict[AccountId, str] = {}
    for cursors in cursor_sets:
        for account_id, cursor in cursors.items():
            if is_newer(cursor, newest.get(account_id)):
                newest[account_id] = cursor
    return newest


async def advance_cursors(
    accounts: AccountsRepository, cursors: Mapping[AccountId, str], *, also: Collection[AccountId] = ()
) -> set[AccountId]:
    """Move each account's cursor forward to the given id; an older (or equal) id changes nothing.
    Returns which of these accounts (and of `also`) are still stored."""
    wanted = set(cursors) | set(also)
    if not wanted:
        return set()
    stored = await accounts.cursors_for_update(wanted)  # locked: a worker and the Matrix process may race
    moving = {a: c for a, c in cursors.items() if a in stored and is_newer(c, stored[a])}
    await accounts.set_cursors(moving)
    return set(stored)


class OutboxWriter:
    """Runs the outbox steps of all users, grouped (see the module doc). One per relay process.

    `write_guard` (a relay worker of a split deployment) runs first in every transaction that writes
    outbox rows or cursors for a write step, and may refuse it with `LeaseLost`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        *,
        write_guard: WriteGuard | None = None,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._write_guard = write_guard
        self._queue: list[_Step] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(
        self, user: str, drafts: Sequence[OutboxDraft], cursors: Mapping[AccountId, str]
    ) -> list[OutboxRecord] | None:
        """Write the drafts to the outbox, the cursors riding on the last one (moved at once when there
        is no draft). None, and nothing written, when the user has no DM room."""
        done: asyncio.Future[list[OutboxRecord] | None] = asyncio.get_running_loop().create_future()
        self._hand_over(_Write(user, drafts, cursors, done))
        return await done

    async def finish(self, record: OutboxRecord, sent_as: str | None) -> None:
        """The message is done (sent as event `sent_as`, or given up): commit its cursors, map the event
        to what it shows (only while that account still exists), and delete it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hand_over(_Finish(record, sent_as, done))
        # The message is in the room: finish it even when its delivery is being stopped (a shutdown
        # waits for the writer), or the next start would send it again.
        await asyncio.shield(done)

    async def wait_idle(self) -> None:
        """Return once every step handed over so far has been run."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    def _hand_over(self, step: _Step) -> None:
        self._queue.append(step)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="outbox-writer")

    async def _drain(self) -> None:
        while self._queue:
            group = [step for step in self._queue[:MAX_STEPS_PER_TRANSACTION] if not step.done.cancelled()]
            del self._queue[:MAX_STEPS_PER_TRANSACTION]
            if not group:
                continue
            try:
                outcomes = await self._run(group)
            except asyncio.CancelledError:
                for step in group:  # the writer itself is cancelled (shutdown): so are its steps
                    step.done.cancel()
                raise
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0], exc)
                    continue
                for step in group:  # each gets its own outcome
                    try:
                        (outcome,) = await self._run([step])
                    except Exception as single:
                        _settle(step, single)
                    else:
                        _settle(step, outcome)
            else:
                for step, outcome in zip(group, outcomes, strict=True):
                    _settle(step, outcome)

    async def _run(self, group: Sequence[_Step]) -> list[list[OutboxRecord] | None]:
        """Run the steps in one transaction; the outcome of each, in order (None for a finish)."""
        writes = [step for step in group if isinstance(step, _Write)]
        finishes = [step for step in group if isinstance(step, _Finish)]
        async with self._sessions() as session, session.begin():
            await take_write_lock(session)  # it reads, then writes: wait for the lock rather than fail
            rooms = await DmRoomsRepository(session).get_many(w.user for w in writes) if writes else {}
            placed = [w for w in writes if w.user in rooms]
            if placed and self._write_guard is not None:
                await self._write_guard(session, {a for w in placed for a in w.cursors})
            new_rows = [
                NewOutboxRow(
                    w.user,
                    rooms[w.user],
                    draft.txn_id,
                    draft.body,
                    draft.html,
                    w.cursors if index == len(w.drafts) - 1 else {},
                    draft.shows,
                )
                for w in placed
                for index, draft in enumerate(w.drafts)
            ]
            records = iter(await OutboxRepository(session, self._keyring).add_many(new_rows))
            written = {id(w): [next(records) for _ in w.drafts] for w in placed}

            moving = newest_cursors(
                [w.cursors for w in placed if not w.drafts] + [f.record.cursors for f in finishes]
            )
            sent = [
                SentMessage(f.sent_as, f.record.matrix_user_id, f.record.room_id, f.record.shows)
                for f in finishes
                if f.sent_as is not None and f.record.shows is not None
            ]
            also = [message.target.account_id for message in sent]
            stored = await advance_cursors(AccountsRepository(session, self._keyring), moving, also=also)
            await RelayedEventsRepository(session).add_many(
                [message for message in sent if message.target.account_id in stored]
            )
            await OutboxRepository(session).delete_many([f.record.id for f in finishes])
        return [written.get(id(step)) if isinstance(step, _Write) else None for step in group]


def _settle(step: _Step, outcome: list[OutboxRecord] | BaseException | None) -> None:
    if step.done.done():
        return
    if isinstance(outcome, BaseException):
        step.done.set_exception(outcome)
    elif isinstance(step, _Write):
        step.done.set_result(outcome)
    else:
        step.done.set_result(None)
