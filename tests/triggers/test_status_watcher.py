"""Shared status checks (triggers/status_watcher.py) against the emulator over HTTP: many triggers,
one list request per round for up to 100 runs, correct events whatever happens, nothing left behind.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.noxus_tasks import first_event

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.hooks._transport import SHARED_SESSIONS
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger
from airflow_provider_noxus.triggers.status_watcher import StatusWatchers

#: Three workflows whose runs last ``seconds``; the third fails at the end.
WORKFLOWS = [
    {"name": "wait_a", "inputs": [{"label": "seconds", "type": "number"}],
     "nodes": [{"name": "Wait", "kind": "step", "seconds": "{seconds}"}], "outputs": {"done": True}},
    {"name": "wait_b", "inputs": [{"label": "seconds", "type": "number"}],
     "nodes": [{"name": "Wait", "kind": "step", "seconds": "{seconds}"}], "outputs": {"done": True}},
    {"name": "wait_then_fail", "inputs": [{"label": "seconds", "type": "number"}],
     "nodes": [{"name": "Explode", "kind": "fail", "seconds": "{seconds}", "message": "late failure"}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    workflows_file = Path(tmp_path_factory.mktemp("workflows")) / "workflows.json"
    workflows_file.write_text(json.dumps(WORKFLOWS))
    with EmulatorServer(workflows_file=workflows_file) as emulator:
        yield emulator


@pytest.fixture
def emu(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    server.control.reset()
    connection = {"conn_type": "noxus", "host": server.url, "password": server.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps({**connection, "extra": {"timeout": 10}}))
    return server


def requests(emu: EmulatorServer, endpoint: str) -> dict[str, int]:
    return dict(emu.control.counters()["requests"].get(endpoint, {}))


def trigger(workflow_id: str, run_id: str, poll_interval: float = 0.5, **kwargs: Any) -> NoxusRunTrigger:
    kwargs.setdefault("wait_strategy", "poll")
    return NoxusRunTrigger("noxus_default", workflow_id, run_id, poll_interval=poll_interval, **kwargs)


def create(emu: EmulatorServer, workflow: str, seconds: float) -> tuple[str, str]:
    workflow_id = emu.control.workflow_id(workflow)
    return workflow_id, NoxusHook().create_run(workflow_id, {"seconds": seconds})["id"]


def assert_nothing_left() -> None:
    assert StatusWatchers.active() == []
    assert SHARED_SESSIONS.pools() == {}
    watchers = [task for task in asyncio.all_tasks() if task.get_name().startswith("noxus-status-watcher")]
    assert watchers == []


async def test_300_triggers_over_3_workflows_each_get_their_own_event_for_few_requests(emu: Any) -> None:
    chooser = random.Random(7)
    runs = [
        create(emu, workflow, round(chooser.uniform(0.2, 3.0), 2))
        for workflow in ("wait_a", "wait_b", "wait_then_fail")
        for _ in range(100)
    ]
    started = time.monotonic()
    events = await asyncio.wait_for(
        asyncio.gather(*(first_event(trigger(workflow_id, run_id)) for workflow_id, run_id in runs)), 60
    )
    elapsed = time.monotonic() - started
    failing = emu.control.workflow_id("wait_then_fail")
    for (workflow_id, run_id), event in zip(runs, events, strict=True):
        assert (event["run_id"], event["workflow_id"]) == (run_id, workflow_id)
        assert event["status"] == ("failed" if workflow_id == failing else "success")
    # Per-run polling would have cost 300 requests per interval. A round costs each workflow one list
    # page for its 100 runs (two while the budget's margin reads past them), plus one round per wake-up.
    rounds = elapsed / 0.5 + 2
    listed = sum(requests(emu, "list_runs").values())
    assert listed <= 3 * 2 * rounds, (listed, rounds)
    assert sum(requests(emu, "get_run_status").values()) <= 10
    assert_nothing_left()


async def test_runs_deeper_than_the_page_budget_are_read_one_by_one(emu: Any) -> None:
    workflow_id, old_run = create(emu, "wait_a", 1.5)
    for _ in range(300):  # newer runs push it to the fourth page
        create(emu, "wait_a", 0)
    event = await asyncio.wait_for(first_event(trigger(workflow_id, old_run, poll_interval=0.2)), 30)
    assert event["status"] == "success"
    assert sum(requests(emu, "get_run_status").values()) >= 1
    rounds = sum(requests(emu, "get_run_status").values())
    assert sum(requests(emu, "list_runs").values()) <= 2 * rounds, "a round reads at most its budget of pages"
    assert_nothing_left()


async def test_a_run_seen_final_answers_its_trigger_before_its_turn(emu: Any) -> None:
    workflow_id, quick_run = create(emu, "wait_a", 30)
    _, patient_run = create(emu, "wait_a", 0.5)
    quick = asyncio.ensure_future(first_event(trigger(workflow_id, quick_run, poll_interval=0.2)))
    started = time.monotonic()
    # Its own turn would come 30 s after its first read: the other trigger's rounds see it end.
    event = await asyncio.wait_for(first_event(trigger(workflow_id, patient_run, poll_interval=30)), 20)
    assert event["status"] == "success"
    assert time.monotonic() - started < 5
    quick.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quick
    NoxusHook().stop_run(quick_run)
    assert_nothing_left()


async def test_cancelling_half_the_triggers_leaves_nothing_behind(emu: Any) -> None:
    long_runs = [create(emu, "wait_b", 30) for _ in range(10)]
    short_runs = [create(emu, "wait_b", 1.0) for _ in range(10)]
    cancelled = [asyncio.ensure_future(first_event(trigger(*run, poll_interval=0.2))) for run in long_runs]
    finishing = [asyncio.ensure_future(first_event(trigger(*run, poll_interval=0.2))) for run in short_runs]
    await asyncio.sleep(0.5)
    assert len(StatusWatchers.active()) == 1
    for task in cancelled:
        task.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    events = await asyncio.wait_for(asyncio.gather(*finishing), 20)
    assert {event["status"] for event in events} == {"success"}
    for _, run_id in long_runs:
        NoxusHook().stop_run(run_id)
    assert_nothing_left()


async def test_a_lone_run_is_read_on_its_own_and_listed_once_another_run_waits(emu: Any) -> None:
    lone, other = create(emu, "wait_a", 30), create(emu, "wait_a", 30)
    waits = [asyncio.ensure_future(first_event(trigger(*lone, poll_interval=0.2)))]
    try:
        await asyncio.sleep(1.0)
        assert requests(emu, "list_runs") == {}, "a page of the workflow's history for one run"
        assert sum(requests(emu, "get_run_status").values()) >= 3
        waits.append(asyncio.ensure_future(first_event(trigger(*other, poll_interval=0.2))))
        await asyncio.sleep(1.0)
        reads = sum(requests(emu, "get_run_status").values())
        await asyncio.sleep(1.0)
        assert sum(requests(emu, "list_runs").values()) >= 3
        assert sum(requests(emu, "get_run_status").values()) == reads, "two runs: one list page a round"
        assert not any(wait.done() for wait in waits)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    for _, run_id in (lone, other):
        NoxusHook().stop_run(run_id)
    assert_nothing_left()


async def test_a_failed_page_delays_that_round_only(emu: Any) -> None:
    runs = [create(emu, "wait_a", 0.3) for _ in range(2)]
    emu.control.add_fault("list_runs", "status", status=503, count=1)
    waits = (first_event(trigger(*run, poll_interval=0.2)) for run in runs)
    events = await asyncio.wait_for(asyncio.gather(*waits), 20)
    assert [event["status"] for event in events] == ["success", "success"]
    assert requests(emu, "list_runs").get("503") == 1
    assert requests(emu, "get_run_status") == {}, "one failed page is not a reason to read runs one by one"
    assert_nothing_left()


async def test_a_key_refused_everywhere_fails_each_trigger_by_its_own_read(emu: Any) -> None:
    runs = [create(emu, "wait_a", 30) for _ in range(5)]
    for endpoint in ("list_runs", "get_run_status"):
        emu.control.add_fault(endpoint, "status", status=401, count=-1)
    events = await asyncio.wait_for(asyncio.gather(*(first_event(trigger(*run)) for run in runs)), 20)
    assert {(event["status"], event["error_type"]) for event in events} == {("error", "NoxusAuthError")}
    # The refused list read is not taken for every run's answer: each run's own read refused it.
    assert requests(emu, "list_runs") == {"401": 1}
    assert requests(emu, "get_run_status") == {"401": 5}
    emu.control.clear_faults()
    for _, run_id in runs:
        NoxusHook().stop_run(run_id)
    assert_nothing_left()


async def test_each_trigger_keeps_its_own_deadline(emu: Any) -> None:
    workflow_id, run_id = create(emu, "wait_a", 30)
    _, other_run = create(emu, "wait_a", 30)
    soon = trigger(workflow_id, run_id, poll_interval=0.2, deadline=time.time() + 0.8)
    later = asyncio.ensure_future(first_event(trigger(workflow_id, other_run, poll_interval=0.2)))
    assert (await asyncio.wait_for(first_event(soon), 10))["status"] == "timeout"
    assert not later.done()
    later.cancel()
    await asyncio.gather(later, return_exceptions=True)
    for run in (run_id, other_run):
        NoxusHook().stop_run(run)
    assert_nothing_left()
