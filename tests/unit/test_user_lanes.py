"""User lanes: work runs in order per user, and users stuck on slow instances do not hold up others."""

from __future__ import annotations

import asyncio

from bot.user_lanes import MAX_CONCURRENT_COMMANDS, UserLanes, Work


async def test_a_user_is_served_while_many_others_wait_on_slow_instances() -> None:
    lanes = UserLanes()
    release = asyncio.Event()
    stuck = 16  # twice the old global cap of 8: a handful of hostile users held every slot

    async def waits_on_a_slow_instance() -> None:
        await release.wait()

    for n in range(stuck):
        lanes.enqueue(f"@slow{n}:example.org", waits_on_a_slow_instance)
    served = asyncio.Event()

    async def answer() -> None:
        served.set()

    lanes.enqueue("@alice:example.org", answer)
    await asyncio.wait_for(served.wait(), timeout=30)  # only a failure waits this long
    assert stuck < MAX_CONCURRENT_COMMANDS
    release.set()
    await lanes.settled()


async def test_one_users_work_runs_in_order() -> None:
    lanes = UserLanes()
    done: list[int] = []

    def work(n: int) -> Work:
        async def run() -> None:
            await asyncio.sleep(0)
            done.append(n)

        return run

    for n in range(5):
        lanes.enqueue("@alice:example.org", work(n))
    await lanes.settled()
    assert done == [0, 1, 2, 3, 4]
