"""NoxusRunSensor against the emulator: deferrable and poke modes, every outcome; it never stops a run."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from support.noxus_tasks import defer_only, make_context, run_task, task_end, use_fast_connection

from airflow_provider_noxus._compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_3_PLUS,
    TaskFailedEvent,
    TaskSuccessEvent,
)
from airflow_provider_noxus.exceptions import NoxusRunError, NoxusRunTimeoutError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


def sensor_for(emu: Any, workflow: str, inputs: dict[str, Any], **kwargs: Any) -> NoxusRunSensor:
    workflow_id = emu.control.workflow_id(workflow)
    run_id = NoxusHook().create_run(workflow_id, inputs)["id"]
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("end_from_trigger", False)
    return NoxusRunSensor(task_id="wait", run_id=run_id, workflow_id=workflow_id, **kwargs)


@pytest.mark.parametrize("deferrable", [True, False])
def test_returns_the_output(emu: Any, deferrable: bool) -> None:
    sensor = sensor_for(emu, "echo", {"text": "seen"}, deferrable=deferrable)
    assert run_task(sensor, make_context()) == {"text": "seen"}


@pytest.mark.parametrize("deferrable", [True, False])
def test_failed_run_raises_with_its_message(emu: Any, deferrable: bool) -> None:
    sensor = sensor_for(emu, "fail", {"message": "bad input"}, deferrable=deferrable)
    with pytest.raises(NoxusRunError, match="bad input") as raised:
        run_task(sensor, make_context())
    assert sensor.run_id in str(raised.value)


@pytest.mark.parametrize("deferrable", [True, False])
def test_feedback_fail_raises_and_leaves_the_run(emu: Any, deferrable: bool) -> None:
    sensor = sensor_for(
        emu,
        "human_review",
        {"text": "?", "feedback_delay": 30},
        deferrable=deferrable,
        on_human_feedback="fail",
    )
    with pytest.raises(NoxusRunError, match="human feedback"):
        run_task(sensor, make_context())
    assert emu.control.counters()["stops_total"] == 0


def test_deferred_timeout_raises_and_leaves_the_run(emu: Any) -> None:
    sensor = sensor_for(emu, "slow", {"seconds": 30}, timeout=0.5, wait_strategy="poll")
    with pytest.raises(NoxusRunTimeoutError, match="left running"):
        run_task(sensor, make_context())
    assert emu.control.counters()["stops_total"] == 0


def test_deferred_sensor_never_stops_on_kill(emu: Any) -> None:
    sensor = sensor_for(emu, "slow", {"seconds": 30})
    deferred = defer_only(sensor, make_context())
    assert deferred.trigger.cancel_on_kill is False


def test_poke_mode_uses_poll_interval_as_poke_interval() -> None:
    sensor = NoxusRunSensor(task_id="s", run_id="r", workflow_id="w", deferrable=False, poll_interval=7)
    assert sensor.poke_interval == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wait_strategy": "x"}, "wait_strategy"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"run_id": ""}, "run_id"),
    ],
)
def test_bad_arguments_fail_at_parse(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"run_id": "r", "workflow_id": "w", **kwargs}
    with pytest.raises(ValueError, match=message):
        NoxusRunSensor(task_id="s", **kwargs)


# ---- start_from_trigger: no worker at all ---------------------------------------------------------


def test_start_from_trigger_gives_the_scheduler_a_trigger_that_ends_the_task(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("echo")
    run_id = NoxusHook().create_run(workflow_id, {"text": "seen"})["id"]
    sensor = NoxusRunSensor(
        task_id="wait",
        run_id=run_id,
        workflow_id=workflow_id,
        start_from_trigger=True,
        end_from_trigger=True,
        poll_interval=0.05,
    )
    args = sensor.start_trigger_args
    assert args is not None and args.next_method == "execute_complete"
    assert args.trigger_cls == "airflow_provider_noxus.triggers.noxus.NoxusRunTrigger"
    kwargs = dict(args.trigger_kwargs or {})
    assert json.loads(json.dumps(kwargs)) == kwargs, "plain values only"
    assert emu.api_key not in json.dumps(kwargs)
    assert (kwargs["end_from_trigger"], kwargs["may_stop_run"], kwargs["cancel_on_kill"]) == (
        True,
        False,
        False,
    )
    assert args.timeout == timedelta(seconds=sensor.timeout)
    event, xcoms = asyncio.run(asyncio.wait_for(task_end(NoxusRunTrigger(**kwargs)), 60))
    assert isinstance(event, TaskSuccessEvent)
    run_url = NoxusHook().run_url(workflow_id, run_id)
    # No worker ever runs this task: the trigger pushes what a worker would have, the link included
    # (Airflow 3 stores links as XComs, on the worker).
    link = {"_link_NoxusRunLink": run_url} if AIRFLOW_V_3_0_PLUS else {}
    assert xcoms == {"return_value": {"text": "seen"}, "run_id": run_id, "run_url": run_url, **link}


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2 resumes a failing task on a worker")
def test_started_from_the_trigger_a_failed_run_still_leaves_its_id_and_link(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("fail")
    run_id = NoxusHook().create_run(workflow_id, {"message": "bad input"})["id"]
    sensor = NoxusRunSensor(
        task_id="wait", run_id=run_id, workflow_id=workflow_id, start_from_trigger=True, poll_interval=0.05
    )
    kwargs = dict(sensor.start_trigger_args.trigger_kwargs or {})  # type: ignore[union-attr]
    event, xcoms = asyncio.run(asyncio.wait_for(task_end(NoxusRunTrigger(**kwargs)), 60))
    assert isinstance(event, TaskFailedEvent)
    run_url = NoxusHook().run_url(workflow_id, run_id)
    assert xcoms == {"run_id": run_id, "run_url": run_url, "_link_NoxusRunLink": run_url}


def test_start_from_trigger_needs_a_deferrable_sensor_that_ends_in_the_triggerer() -> None:
    with pytest.raises(ValueError, match="needs deferrable=True and end_from_trigger=True"):
        NoxusRunSensor(
            task_id="s", run_id="r", workflow_id="w", start_from_trigger=True, end_from_trigger=False
        )


@pytest.mark.skipif(AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3 renders templates in the triggerer")
def test_start_from_trigger_with_templates_is_refused_at_parse_before_airflow_3_3() -> None:
    with pytest.raises(ValueError, match=r"templated run_id needs Airflow 3\.3"):
        NoxusRunSensor(
            task_id="s",
            run_id="{{ ti.xcom_pull('start') }}",
            workflow_id="w",
            start_from_trigger=True,
            end_from_trigger=True,
        )
