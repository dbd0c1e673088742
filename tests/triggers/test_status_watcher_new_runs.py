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
from airflow_provider_noxus.wait import run_signature

INTERVAL_S = 1.0


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


def requests_to(emu: Any, endpoint: str) -> int:
    return sum(emu.control.counters()["requests"].get(endpoint, {}).values())


async def checked_in_one_round(watcher: Any, runs: list[str], after: list[Any]) -> tuple[int, int]:
    """Wait (unchanged runs wake nobody) through the watcher's next whole round (from the end of the
    round under way to the end of the next: rounds are counted when done); its list pages and per-run
    reads."""
    pairs = zip(runs, after, strict=True)
    waiting = [
        asyncio.ensure_future(watcher.next_change(run_id, INTERVAL_S, run_signature(seen)))
        for run_id, seen in pairs
    ]

    async def end_of_round() -> None:
        rounds = watcher.rounds
        while watcher.rounds == rounds:  # noqa: ASYNC110 - a counter the watcher bumps, no event to wait on
            await asyncio.sleep(0.01)

    try:
        await end_of_round()
        pages, reads = watcher.pages_read, watcher.runs_read
        await end_of_round()
        assert not any(task.done() for task in waiting), "a run that did not change woke its trigger"
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    return watcher.pages_read - pages, watcher.runs_read - reads


async def test_runs_pushed_down_the_list_by_newer_runs_are_still_read_from_the_list(emu: Any) -> None:
    hook = NoxusHook()
    workflow_id = emu.control.workflow_id("slow")
    waited = [hook.create_run(workflow_id, {"seconds": 60})["id"] for _ in range(50)]
    async with (
        hook.async_client() as client,
        StatusWatchers.join(client.settings, workflow_id) as watcher,
    ):
        first = await asyncio.wait_for(
            asyncio.gather(*(watcher.next_change(run_id, INTERVAL_S, None) for run_id in waited)), 20
        )
        assert [run["id"] for run in first] == waited
        assert (watcher.pages_read, watcher.runs_read) == (1, 0)  # all on the first page
        # 250 newer runs push the 50 waited on from the first page to the third.
        await asyncio.to_thread(lambda: [hook.create_run(workflow_id, {"seconds": 60}) for _ in range(250)])
        # The round reads the first page (which tells how many runs were created since), then the
        # pages down to where the runs now are: none is read on its own.
        assert await asyncio.wait_for(checked_in_one_round(watcher, waited, first), 20) == (3, 0)
        for run_id in waited:
            watcher.forget(run_id)
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
        reads = (watcher.next_change(run_id, INTERVAL_S, None) for run_id in oldest)
        seen = await asyncio.wait_for(asyncio.gather(*reads), 20)
        for run_id in oldest:
            watcher.forget(run_id)
    assert [run["id"] for run in seen] == oldest
    # Their number asks for two pages; the third costs one request instead of fifty.
    assert requests_to(emu, "list_runs") == 3
    assert requests_to(emu, "get_run_status") == 0
    assert StatusWatchers.active() == []
