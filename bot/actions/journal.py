"""The database steps of an action, each one transaction (see `store.action_journal`). The service sees
only this class, so a test can make one step fail (the crash between the server call and `finish`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.store.action_journal import ActionJournalRepository, ActionKind, ActionRecord, Intent
from bot.store.event_map import RelayedEventRecord, RelayedEventsRepository
from bot.store.keyring import KeyRing
from bot.store.records import AccountId, AccountRecord, Clock, utc_now
from bot.store.repositories import AccountsRepository, DmRoomsRepository

__all__ = ["ActionJournal", "Started", "Surroundings"]


@dataclass(frozen=True)
class Started:
    entry: ActionRecord
    fresh: bool  # False: the entry was there before (a replayed event)


@dataclass(frozen=True)
class Surroundings:
    """What gating needs to know about a reaction or reply to `event_id`, read in one transaction."""

    dm_room_id: str | None
    mapped: RelayedEventRecord | None
    account: AccountRecord | None
    earlier: ActionRecord | None  # the journal entry of the event itself (what a redaction takes back)


class ActionJournal:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, clock: Clock = utc_now
    ) -> None:
        self._sessions, self._keyring, self._clock = sessions, keyring, clock

    async def surroundings(self, user_id: str, event_id: str) -> Surroundings:
        async with self._sessions() as session, session.begin():
            mapped = await RelayedEventsRepository(session).get(event_id)
            earlier = await ActionJournalRepository(session, self._clock, self._keyring).get(event_id)
            account_id = mapped.target.account_id if mapped is not None else None
            if account_id is None and earlier is not None:
                account_id = earlier.account_id
            accounts = AccountsRepository(session, self._keyring, self._clock)
            account = None if account_id is None else await accounts.get(account_id)
            dm = await DmRoomsRepository(session).get(user_id)
        return Surroundings(dm, mapped, account, earlier)

    async def is_relayed(self, event_id: str) -> bool:
        async with self._sessions() as session:
            return await RelayedEventsRepository(session).get(event_id) is not None

    async def account(self, account_id: AccountId) -> AccountRecord | None:
        async with self._sessions() as session:
            return await AccountsRepository(session, self._keyring, self._clock).get(account_id)

    async def pending(self) -> list[ActionRecord]:
        async with self._sessions() as session:
            return await ActionJournalRepository(session, self._clock, self._keyring).pending()

    async def accounts_of(self, user_id: str) -> list[AccountRecord]:
        async with self._sessions() as session:
            return await AccountsRepository(session, self._keyring, self._clock).list_for_user(user_id)

    async def dm_room(self, user_id: str) -> str | None:
        async with self._sessions() as session:
            return await DmRoomsRepository(session).get(user_id)

    async def start(
        self,
        *,
        event_id: str,
        user_id: str,
        account_id: AccountId,
        action: ActionKind,
        target_id: str | None,
        idempotency_key: str,
    ) -> Started:
        async with self._sessions() as session, session.begin():
            journal = ActionJournalRepository(session, self._clock, self._keyring)
            before = await journal.get(event_id)
            if before is not None and not before.started:  # written at intake: this is the first try
                await journal.mark_started(event_id)
                return Started(before, fresh=True)
            if before is not None:
                return Started(before, fresh=False)
            entry = await journal.begin(
                event_id=event_id,
                matrix_user_id=user_id,
                account_id=account_id,
                action=action,
                target_id=target_id,
                idempotency_key=idempotency_key,
            )
            return Started(entry, fresh=True)

    async def receive(self, intent: Intent) -> None:
        """Make what `intent`'s event asks for durable, before the sync token moves past the event."""
        async with self._sessions() as session, session.begin():
            await ActionJournalRepository(session, self._clock, self._keyring).receive(intent)

    async def finish(self, event_id: str, *, result_id: str | None = None, url: str | None = None) -> None:
        async with self._sessions() as session, session.begin():
            await ActionJournalRepository(session, self._clock).finish(
                event_id, result_id=result_id, result_url=url
            )

    async def abandon(self, event_id: str) -> None:
        """The server refused for good: drop the pending entry (nothing happened there)."""
        async with self._sessions() as session, session.begin():
            await ActionJournalRepository(session, self._clock).forget(event_id)

    async def withdraw(self, event_id: str) -> None:
        """A command refused before its server call: drop what intake wrote, so nothing resumes it."""
        async with self._sessions() as session, session.begin():
            await ActionJournalRepository(session, self._clock).forget(event_id, only_unstarted=True)
