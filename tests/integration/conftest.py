"""Fixtures most integration tests share: a fake GoToSocial on loopback and the relay harness.

A test module that needs a differently prepared fake defines its own `gts`, which takes precedence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.store.keyring import KeyRing
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.relay_support import Harness, harness


@pytest.fixture
async def gts() -> AsyncIterator[FakeGoToSocial]:
    async with FakeGoToSocial() as server:
        yield server


@pytest.fixture
async def h(sessions: async_sessionmaker[AsyncSession], keyring: KeyRing) -> AsyncIterator[Harness]:
    """The relay harness over a fresh database (SQLite and PostgreSQL)."""
    async with harness(sessions, keyring) as value:
        yield value
