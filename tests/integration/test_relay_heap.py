"""Settling the heap once every stream is open: the relay says when (`on_streams_open`), once, and
`freeze_long_lived` moves what is alive out of the collector's reach (measured in benchmarks/scale.py)."""

from __future__ import annotations

import gc

from bot.relay.heap import freeze_long_lived
from tests.fakes.gotosocial import FakeGoToSocial
from tests.integration.relay_support import Harness
from tests.waiting import wait_until


async def test_on_streams_open_is_called_once_when_every_started_account_streams(
    gts: FakeGoToSocial, h: Harness
) -> None:
    for name in ("alice", "bob", "carol"):
        await h.add_account(gts, name, cursor="0")
    seen: list[int] = []
    manager = h.manager(on_streams_open=lambda: seen.append(manager.live_streams))
    await manager.start()
    await wait_until(lambda: seen != [], what="the streams-open call")
    assert seen == [3]

    gts.drop_streams()  # every stream reconnects: not a start-up any more
    await wait_until(lambda: manager.live_streams < 3, what="the relay noticing the drop")
    await wait_until(lambda: gts.open_streams() == 3 and manager.live_streams == 3, what="reconnected")
    assert seen == [3]


async def test_on_streams_open_with_no_accounts_is_called_at_once(h: Harness) -> None:
    seen: list[bool] = []
    manager = h.manager(on_streams_open=lambda: seen.append(True))
    await manager.start()
    assert seen == [True]


def test_freeze_long_lived_moves_live_objects_out_of_the_collectors_reach() -> None:
    kept = [[index] for index in range(1000)]  # container objects: tracked by the collector
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
