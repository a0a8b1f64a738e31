"""One real Synapse per test session, plus helpers to make people who talk to the bot."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.human import Human
from tests.e2e.synapse import Synapse, SynapseProcess


@pytest.fixture(scope="session")
def synapse_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    proc = SynapseProcess(tmp_path_factory.mktemp("synapse"))
    proc.start()  # raises with the log tail when Synapse does not come up
    print(f"\nSynapse ready at {proc.synapse and proc.synapse.base_url} in {proc.startup_seconds:.1f} s")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def synapse(synapse_process: SynapseProcess) -> Synapse:
    assert synapse_process.synapse is not None
    return synapse_process.synapse


@pytest.fixture(autouse=True)
def _synapse_log_on_failure(
    request: pytest.FixtureRequest, synapse_process: SynapseProcess
) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("\n--- Synapse log tail ---\n" + synapse_process.log_tail(40))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


MakeHuman = Callable[..., Awaitable[Human]]


@pytest.fixture
async def make_human(synapse: Synapse, tmp_path: Path) -> AsyncIterator[MakeHuman]:
    """`await make_human("alice")`: a fresh account with its own device and E2EE store; closed afterwards."""
    made: list[Human] = []

    async def make(name: str = "human") -> Human:
        human = await Human.create(synapse, tmp_path / f"{name}-{secrets.token_hex(2)}-store", name)
        made.append(human)
        return human

    yield make
    for human in made:
        await human.close()
