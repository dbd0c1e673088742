"""NoxusRunTrigger against the emulator over HTTP: every outcome, each strategy, faults, kill, cleanup."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from typing import Any

import pytest
from support.noxus_tasks import first_event, use_fast_connection

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_noxus.hooks._transport import SHARED_SESSIONS
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers import noxus as trigger_module
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger, StreamingTriggers

STRATEGIES = ["stream", "poll", "auto"]


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


def start_run(emu: Any, workflow: str, inputs: dict[str, Any]) -> tuple[str, str]:
    workflow_id = emu.control.workflow_id(workflow)
    run = NoxusHook().create_run(workflow_id, inputs)
    return workflow_id, run["id"]


def make_trigger(workflow_id: str, run_id: str, **kwargs: Any) -> NoxusRunTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    return NoxusRunTrigger(noxus_conn_id="noxus_default", workflow_id=workflow_id, run_id=run_id, **kwargs)


def requests_to(emu: Any, endpoint: str) -> int:
    return sum(emu.control.counters()["requests"].get(endpoint, {}).values())


# ---- serialization --------------------------------------------------------------------------


def test_serialize_round_trips_with_plain_values_and_no_secret(emu: Any) -> None:
    trigger = make_trigger(
        "wf-1", "run-1", deadline=1234.5, wait_strategy="poll", last_event_id="1-0", on_human_feedback="fail"
    )
    classpath, kwargs = trigger.serialize()
    module_name, class_name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert set(kwargs) == {
        "noxus_conn_id", "workflow_id", "run_id", "deadline", "poll_interval", "wait_strategy",
        "on_human_feedback", "cancel_on_kill", "end_from_trigger", "may_stop_run", "max_output_bytes",
        "limits", "push_output", "push_run_link", "output_model",
    }  # fmt: skip
    assert emu.api_key not in repr(trigger)
    assert emu.api_key not in json.dumps(kwargs)
    assert "last_event_id" not in kwargs, "accepted from 0.1.0's triggers, never kept"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wait_strategy": "websocket"}, "wait_strategy"),
        ({"on_human_feedback": "ignore"}, "on_human_feedback"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_trigger("wf", "run", **kwargs)


# ---- outcomes, per strategy -----------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_completed_run_gives_success(emu: Any, strategy: str) -> None:
    workflow_id, run_id = start_run(emu, "echo", {"text": "hello"})
    event = await first_event(make_trigger(workflow_id, run_id, wait_strategy=strategy))
    assert event["status"] == "success"
    assert (event["run_id"], event["workflow_id"], event["run_status"]) == (run_id, workflow_id, "completed")
    assert "output" not in event
    # A lone polled run is read on its own, even by the shared watcher.
    used = {"stream": "run_events", "poll": "get_run_status", "auto": "run_events"}[strategy]
    assert requests_to(emu, used) >= 1
    assert StreamingTriggers.active == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_failed_run_gives_failed(emu: Any, strategy: str) -> None:
    workflow_id, run_id = start_run(emu, "fail", {"message": "model exploded"})
    event = await first_event(make_trigger(workflow_id, run_id, wait_strategy=strategy))
    assert (event["status"], event["run_status"]) == ("failed", "failed")


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_stopped_run_gives_stopped(emu: Any, strategy: str) -> None:
    workflow_id, run_id = start_run(emu, "slow", {"seconds": 30})
    waiting = asyncio.create_task(first_event(make_trigger(workflow_id, run_id, wait_strategy=strategy)))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(NoxusHook().stop_run, run_id)
    event = await waiting
    assert (event["status"], event["run_status"]) == ("stopped", "stopped")


@pytest.mark.parametrize("strategy", ["stream", "poll"])
async def test_awaiting_feedback_then_completed(emu: Any, strategy: str) -> None:
    workflow_id, run_id = start_run(emu, "human_review", {"text": "ok?", "feedback_delay": 0.5})
    event = await first_event(make_trigger(workflow_id, run_id, wait_strategy=strategy))
    assert event["status"] == "success"


@pytest.mark.parametrize("strategy", ["stream", "poll"])
async def test_awaiting_feedback_with_fail(emu: Any, strategy: str) -> None:
    workflow_id, run_id = start_run(emu, "human_review", {"text": "ok?", "feedback_delay": 30})
    trigger = make_trigger(workflow_id, run_id, wait_strategy=strategy, on_human_feedback="fail")
    event = await first_event(trigger)
    assert (event["status"], event["run_status"]) == ("failed", "awaiting_human_feedback")
    assert "on_human_feedback='fail'" in event["message"]


@pytest.mark.parametrize("strategy", ["stream", "poll"])
async def test_deadline_gives_timeout_event(emu: Any, strategy: str) -> None:
    workflow_id, run_id = start_run(emu, "slow", {"seconds": 30})
    trigger = make_trigger(workflow_id, run_id, wait_strategy=strategy, deadline=time.time() + 0.5)
    event = await first_event(trigger)
    assert event["status"] == "timeout"
    assert run_id in event["message"] and workflow_id in event["message"]
    assert emu.control.counters()["stops_total"] == 0  # the operator stops it, not the trigger


# ---- faults ---------------------------------------------------------------------------------


async def test_dropped_stream_resumes_after_last_event(emu: Any) -> None:
    # Every connection drops after 2 frames: only a client that resumes after its last event id
    # gets further each time; one that starts over never progresses and ends up polling.
    emu.control.add_fault("run_events", "drop_stream", after_frames=2, count=-1)
    workflow_id, run_id = start_run(emu, "echo", {"text": "hi"})
    # A poll interval long enough that no status cross-check happens while streaming.
    trigger = make_trigger(workflow_id, run_id, wait_strategy="stream", poll_interval=5)
    event = await first_event(trigger)
    assert event["status"] == "success"
    assert event["last_event_id"]
    assert requests_to(emu, "run_events") >= 2
    assert requests_to(emu, "get_run_status") == 0


async def test_stream_failures_fall_back_to_polling(emu: Any) -> None:
    emu.control.add_fault("run_events", "status", status=500, count=-1)
    workflow_id, run_id = start_run(emu, "echo", {"text": "hi"})
    event = await first_event(make_trigger(workflow_id, run_id, wait_strategy="stream"))
    assert event["status"] == "success"
    assert requests_to(emu, "list_runs") + requests_to(emu, "get_run_status") >= 1  # checks, watched or own
    assert StreamingTriggers.active == 0


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503, "count": 4},
        {"kind": "status", "status": 429, "count": 3, "retry_after": 0.1},
        {"kind": "reset", "count": 3},
        {"kind": "malformed", "count": 3},
    ],
)
@pytest.mark.parametrize("shared", [True, False], ids=["shared-watcher", "own-reads"])
async def test_transient_errors_never_end_the_wait(
    emu: Any, monkeypatch: pytest.MonkeyPatch, fault: dict[str, Any], shared: bool
) -> None:
    monkeypatch.setattr(NoxusRunTrigger, "shared_status_checks", shared)
    endpoint = "list_runs" if shared else "get_run_status"
    emu.control.add_fault(endpoint, **fault)
    # Two runs of one workflow, so that the shared watcher reads them from the list.
    runs = [start_run(emu, "slow", {"seconds": 0.5}) for _ in range(2)]
    triggers = [make_trigger(workflow_id, run_id, wait_strategy="poll") for workflow_id, run_id in runs]
    events = await asyncio.wait_for(asyncio.gather(*map(first_event, triggers)), 30)
    assert [event["status"] for event in events] == ["success", "success"]
    left = emu.control.faults()
    assert not left or left[0]["count"] < fault["count"], "the failures were met on the way"


async def test_unknown_run_gives_error_event(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("echo")
    event = await first_event(make_trigger(workflow_id, "00000000-0000-0000-0000-000000000000"))
    assert event["status"] == "error"
    assert "00000000-0000-0000-0000-000000000000" in event["message"]


@pytest.mark.parametrize("strategy", ["stream", "poll"])
async def test_refused_key_gives_error_event_without_the_key(
    emu: Any, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    workflow_id, run_id = start_run(emu, "slow", {"seconds": 5})
    use_fast_connection(monkeypatch, emu, password="wrong-key-123")
    event = await first_event(make_trigger(workflow_id, run_id, wait_strategy=strategy))
    assert event["status"] == "error"
    assert "401" in event["message"] or "403" in event["message"]
    assert "wrong-key-123" not in event["message"]


async def test_missing_connection_gives_error_event(emu: Any) -> None:
    trigger = NoxusRunTrigger(
        noxus_conn_id="no_such_noxus", workflow_id="wf", run_id="run", poll_interval=0.1
    )
    event = await first_event(trigger)
    assert event["status"] == "error"
    assert "no_such_noxus" in event["message"]


# ---- strategy choice and progress logs ------------------------------------------------------


async def test_auto_polls_when_too_many_triggers_stream(emu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trigger_module, "AUTO_STREAM_MAX_CONCURRENT", 0)
    workflow_id, run_id = start_run(emu, "echo", {"text": "hi"})
    event = await first_event(make_trigger(workflow_id, run_id, wait_strategy="auto"))
    assert event["status"] == "success"
    assert requests_to(emu, "run_events") == 0
    assert requests_to(emu, "get_run_status") >= 1


def test_auto_leaves_half_the_open_files_limit_to_everything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    assert trigger_module.auto_stream_limit() == 128
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1_048_576, 1_048_576))
    assert trigger_module.auto_stream_limit() == trigger_module.AUTO_STREAM_MAX_CONCURRENT


async def test_streaming_counter_counts_live_streams(emu: Any) -> None:
    runs = [start_run(emu, "slow", {"seconds": 30}) for _ in range(3)]
    tasks = [asyncio.create_task(first_event(make_trigger(w, r, wait_strategy="auto"))) for w, r in runs]
    await asyncio.sleep(0.3)
    assert StreamingTriggers.active == 3
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert StreamingTriggers.active == 0


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What was logged: Airflow 3 logs through structlog to stdout, Airflow 2 through logging."""
    return caplog.text + capsys.readouterr().out


async def test_progress_is_logged_per_node_not_per_token(
    emu: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow_id, run_id = start_run(emu, "summarize", {"document": "Many words to stream back. " * 20})
    with caplog.at_level(logging.INFO):
        event = await first_event(make_trigger(workflow_id, run_id, wait_strategy="stream"))
    assert event["status"] == "success"
    marker = f"Noxus run {run_id}"
    lines = {line[line.index(marker) :] for line in logged(caplog, capsys).splitlines() if marker in line}
    content_frames = [e for e in NoxusHook().iter_run_events(run_id) if e.type == "content"]
    assert any("started" in line for line in lines) and any("finished" in line for line in lines)
    assert any("completed (progress 100%)" in line for line in lines)
    assert len(content_frames) > 10 > len(lines)


# ---- kill and cleanup -----------------------------------------------------------------------


@pytest.mark.parametrize(("cancel_on_kill", "stops"), [(True, 1), (False, 0)])
async def test_on_kill_stops_the_run(emu: Any, cancel_on_kill: bool, stops: int) -> None:
    workflow_id, run_id = start_run(emu, "slow", {"seconds": 30})
    await make_trigger(workflow_id, run_id, cancel_on_kill=cancel_on_kill).on_kill()
    assert emu.control.counters()["stops"].get(run_id, 0) == stops


class TaskStatesSupervisor:
    """Stands in for the triggerer's supervisor (which only runs inside a triggerer): answers the task
    state query the way Airflow 3.3's does."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.asked: list[Any] = []

    async def asend(self, message: Any) -> Any:
        from airflow.sdk.execution_time.comms import TaskStatesResult

        self.asked.append(message)
        return TaskStatesResult(task_states={"run": {"wait_for_run_3": self.state}})


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the triggerer's supervisor is Airflow 3's")
@pytest.mark.parametrize(("state", "stops"), [("deferred", 0), ("failed", 1), ("success", 1), (None, 1)])
async def test_on_kill_leaves_the_run_of_a_task_still_deferred(
    emu: Any, monkeypatch: pytest.MonkeyPatch, state: str | None, stops: int
) -> None:
    """Airflow 3.3 calls on_kill when a trigger only moves to another triggerer (apache/airflow#73454):
    the task is then still deferred and its run must go on. A user action changes the task's state."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    supervisor = TaskStatesSupervisor(state) if state else None
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    workflow_id, run_id = start_run(emu, "slow", {"seconds": 30})
    trigger = make_trigger(workflow_id, run_id)
    trigger.task_instance = SimpleNamespace(dag_id="dag", run_id="run", task_id="wait_for_run", map_index=3)
    await trigger.on_kill()
    assert emu.control.counters()["stops"].get(run_id, 0) == stops
    if supervisor is not None:
        assert [(m.dag_id, m.task_ids, m.run_ids, m.map_index) for m in supervisor.asked] == [
            ("dag", ["wait_for_run"], ["run"], 3)
        ]


class BusySupervisor(TaskStatesSupervisor):
    """A supervisor busy with other tasks' ends: answers the task state query only after a while."""

    async def asend(self, message: Any) -> Any:
        self.asked.append(message)
        await asyncio.sleep(0.5)
        return await super().asend(message)


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the triggerer's supervisor is Airflow 3's")
async def test_on_kill_cancelled_again_still_stops_the_run(emu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.3 cancels a killed trigger again at each sync (about each second) until it ends, so a
    slow answer to the task state query has on_kill itself cancelled: the stop must still be sent."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    supervisor = BusySupervisor("failed")
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", supervisor, raising=False)
    workflow_id, run_id = start_run(emu, "slow", {"seconds": 30})
    trigger = make_trigger(workflow_id, run_id)
    trigger.task_instance = SimpleNamespace(dag_id="dag", run_id="run", task_id="wait_for_run", map_index=3)
    killing = asyncio.ensure_future(trigger.on_kill())
    assert await wait_until(lambda: supervisor.asked)
    killing.cancel("__airflow_user_action__")
    with pytest.raises(asyncio.CancelledError):
        await killing
    assert await wait_until(lambda: emu.control.counters()["stops"].get(run_id, 0) == 1, 10)
    assert await wait_until(lambda: not trigger_module._STOPS_IN_FLIGHT)


async def test_on_kill_logs_errors_and_returns(
    emu: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.control.add_fault("stop_run", "status", status=503, count=-1)
    with caplog.at_level(logging.WARNING):
        await make_trigger(emu.control.workflow_id("echo"), "some-run").on_kill()
    assert "Could not stop Noxus run some-run" in logged(caplog, capsys)


async def wait_until(condition: Any, limit: float = 5.0) -> bool:
    """Poll ``condition`` (the server sees a closed socket a moment after the client closes it)."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.parametrize("ending", ["success", "error", "cancel"])
async def test_client_is_closed_on_every_exit(emu: Any, ending: str) -> None:
    if ending == "success":
        workflow_id, run_id = start_run(emu, "echo", {"text": "hi"})
    else:
        workflow_id, run_id = start_run(emu, "slow", {"seconds": 30})
    if ending == "error":
        emu.control.add_fault("run_events", "status", status=404, count=-1)
    task = asyncio.create_task(first_event(make_trigger(workflow_id, run_id, wait_strategy="stream")))
    if ending == "cancel":
        assert await wait_until(lambda: emu.control.counters()["open_streams"] == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        assert (await task)["status"] == ending
    assert SHARED_SESSIONS.pools() == {}
    assert await wait_until(lambda: emu.control.counters()["open_streams"] == 0)
