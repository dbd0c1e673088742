"""The shared status watcher after the run list fails, slows it down or refuses it (against the emulator's
faults): the list comes back within a few poll intervals, a 429 pauses the whole watcher, and a refused
list read fails no trigger whose own read is allowed. Request counts are the proof.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support.noxus_tasks import use_fast_connection
from support.watched_triggers import waiting

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

INTERVAL_S = 0.2
RUNS = 5


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


def answers(emu: Any, endpoint: str) -> dict[str, int]:
    """Requests ``emu`` answered at ``endpoint``, by HTTP status."""
    return dict(emu.control.counters()["requests"].get(endpoint, {}))


def create_runs(emu: Any, seconds: float, count: int = RUNS) -> tuple[str, list[str]]:
    hook = NoxusHook()
    workflow_id = emu.control.workflow_id("slow")
    return workflow_id, [hook.create_run(workflow_id, {"seconds": seconds})["id"] for _ in range(count)]


def trigger(workflow_id: str, run_id: str) -> NoxusRunTrigger:
    return NoxusRunTrigger(
        "noxus_default", workflow_id, run_id, poll_interval=INTERVAL_S, wait_strategy="poll"
    )


@asynccontextmanager
async def waiting_on(workflow_id: str, run_ids: list[str]) -> AsyncIterator[list[asyncio.Future[Any]]]:
    """Triggers waiting on ``run_ids``, cancelled and their runs stopped on exit."""
    try:
        async with waiting(trigger(workflow_id, run_id) for run_id in run_ids) as waits:
            yield waits
    finally:
        hook = NoxusHook()
        for run_id in run_ids:
            hook.stop_run(run_id)


async def until(condition: Callable[[], Any], limit: float, what: str) -> float:
    """Poll ``condition`` every 20 ms until true; the seconds it took. Fails after ``limit`` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            pytest.fail(f"not within {limit:g} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def assert_listed_not_read_one_by_one(emu: Any, seconds: float = 5 * INTERVAL_S) -> None:
    """Over ``seconds``, the watcher reads the list and no run by itself."""
    reads, listed = answers(emu, "get_run_status"), answers(emu, "list_runs").get("200", 0)
    await asyncio.sleep(seconds)
    assert answers(emu, "get_run_status") == reads, "runs still read one by one after the list came back"
    assert answers(emu, "list_runs").get("200", 0) >= listed + 2


async def test_the_list_is_read_again_within_a_few_intervals_of_an_outage_ending(emu: Any) -> None:
    workflow_id, runs = create_runs(emu, 60)
    # Six failed list reads in a row: three rounds wait, then rounds read the runs one by one while the
    # list is tried again after 1, 2, 4 and 4 intervals.
    emu.control.add_fault("list_runs", "status", status=503, count=6)
    async with waiting_on(workflow_id, runs) as waits:
        await until(lambda: answers(emu, "list_runs").get("503") == 6, 20, "six failed list reads")
        ended = time.monotonic()
        await until(lambda: answers(emu, "list_runs").get("200", 0) >= 1, 10, "the list read again")
        assert time.monotonic() - ended <= 4 * INTERVAL_S + 1.0, "the list is retried within 4 intervals"
        assert sum(answers(emu, "get_run_status").values()) >= RUNS, "runs were read one by one meanwhile"
        await assert_listed_not_read_one_by_one(emu)
        assert not any(wait.done() for wait in waits)


async def test_a_429_pauses_the_whole_watcher_for_its_retry_after(emu: Any) -> None:
    workflow_id, runs = create_runs(emu, 60)
    emu.control.add_fault("list_runs", "status", status=429, count=1, retry_after="2")
    async with waiting_on(workflow_id, runs) as waits:
        await until(lambda: answers(emu, "list_runs").get("429") == 1, 10, "the 429")
        await asyncio.sleep(1.2)
        # Six rounds' worth of time: nothing sent, neither the list nor the runs one by one.
        assert answers(emu, "list_runs") == {"429": 1}
        assert answers(emu, "get_run_status") == {}
        await until(lambda: answers(emu, "list_runs").get("200", 0) >= 1, 5, "the list after the pause")
        assert answers(emu, "get_run_status") == {}, "a 429 is no reason to read runs one by one"
        assert not any(wait.done() for wait in waits)


async def test_a_429_on_a_run_read_pauses_the_whole_watcher(emu: Any) -> None:
    workflow_id, runs = create_runs(emu, 60)
    emu.control.add_fault("list_runs", "status", status=404, count=1)  # runs read one by one
    emu.control.add_fault("get_run_status", "status", status=429, count=1, retry_after="2")
    async with waiting_on(workflow_id, runs) as waits:
        await until(lambda: answers(emu, "get_run_status").get("429") == 1, 10, "the 429")
        await asyncio.sleep(1.2)
        assert answers(emu, "list_runs") == {"404": 1}
        assert sum(answers(emu, "get_run_status").values()) <= RUNS, "a read started after the 429"
        await until(lambda: answers(emu, "list_runs").get("200", 0) >= 1, 5, "the list after the pause")
        assert not any(wait.done() for wait in waits), "a 429 is no trigger's failure"


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_list_read_fails_no_trigger_whose_own_read_is_allowed(emu: Any, status: int) -> None:
    workflow_id, runs = create_runs(emu, 2)
    emu.control.add_fault("list_runs", "status", status=status, count=-1)
    async with waiting_on(workflow_id, runs) as waits:
        events = await asyncio.wait_for(asyncio.gather(*waits), 20)
        assert [event["status"] for event in events] == ["success"] * RUNS
        # The list is not read every round while it is refused, but its verdict expires.
        refused = answers(emu, "list_runs")
        assert set(refused) == {str(status)}
        assert 2 <= refused[str(status)] <= 1 + 2 / (4 * INTERVAL_S) + 2
        assert sum(answers(emu, "get_run_status").values()) >= RUNS
    emu.control.clear_faults()


async def test_an_unusable_list_verdict_expires(emu: Any) -> None:
    workflow_id, runs = create_runs(emu, 60)
    emu.control.add_fault("list_runs", "status", status=422, count=1)
    async with waiting_on(workflow_id, runs) as waits:
        await until(lambda: answers(emu, "list_runs").get("422") == 1, 10, "the 422")
        took = await until(lambda: answers(emu, "list_runs").get("200", 0) >= 1, 10, "the list read again")
        assert took <= 4 * INTERVAL_S + 1.0
        await assert_listed_not_read_one_by_one(emu)
        assert not any(wait.done() for wait in waits)
