"""The shared status watcher finding the runs it waits on deep in the run list (newest first): runs
pushed down by newer ones, and a fan-out's runs older than its first pages. Its list reads follow
them instead of reading each run on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.noxus_tasks import use_fast_connection

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.status_watcher import StatusWatchers

INTERVAL_S = 1.0


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


def requests_to(emu: Any, endpoint: str) -> int:
    return sum(emu.control.counters()["requests"].get(endpoint, {}).values())


async def test_runs_pushed_down_the_list_by_newer_runs_are_still_read_from_the_list(emu: Any) -> None:
    hook = NoxusHook()
    workflow_id = emu.control.workflow_id("slow")
    waited = [hook.create_run(workflow_id, {"seconds": 60})["id"] for _ in range(50)]
    async with (
        hook.async_client() as client,
        StatusWatchers.join(client.settings, workflow_id) as watcher,
    ):

        async def every_status() -> list[str]:
            reads = (watcher.next_status(run_id, INTERVAL_S) for run_id in waited)
            return [run["id"] for run in await asyncio.wait_for(asyncio.gather(*reads), 20)]

        assert await every_status() == waited  # all on the first page
        # 250 newer runs push the 50 waited on from the first page to the third.
        await asyncio.to_thread(lambda: [hook.create_run(workflow_id, {"seconds": 60}) for _ in range(250)])
        assert await every_status() == waited
        for run_id in waited:
            watcher.forget(run_id)
    assert requests_to(emu, "get_run_status") == 0, "a run that moved down the list was read on its own"
    # The first round: one page. The second: the first page (which tells how many runs were created
    # since), then the pages down to where the runs now are.
    assert requests_to(emu, "list_runs") == 1 + 3
    assert StatusWatchers.active() == []


async def test_due_runs_deeper_than_the_budget_are_listed_when_the_rest_of_the_list_costs_less(
    emu: Any,
) -> None:
    hook = NoxusHook()
    workflow_id = emu.control.workflow_id("slow")
    runs = [hook.create_run(workflow_id, {"seconds": 60})["id"] for _ in range(250)]
    oldest = runs[:60]  # positions 190-249: ten on the second page, fifty on the third (and last)
    async with (
        hook.async_client() as client,
        StatusWatchers.join(client.settings, workflow_id) as watcher,
    ):
        reads = (watcher.next_status(run_id, INTERVAL_S) for run_id in oldest)
        seen = await asyncio.wait_for(asyncio.gather(*reads), 20)
        for run_id in oldest:
            watcher.forget(run_id)
    assert [run["id"] for run in seen] == oldest
    # Their number asks for two pages; the third costs one request instead of fifty.
    assert requests_to(emu, "list_runs") == 3
    assert requests_to(emu, "get_run_status") == 0
    assert StatusWatchers.active() == []
