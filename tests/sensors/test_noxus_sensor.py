"""NoxusRunSensor against the emulator: deferrable and poke modes, every outcome; it never stops a run."""

from __future__ import annotations

from typing import Any

import pytest
from support.noxus_tasks import defer_only, make_context, run_task, use_fast_connection

from airflow_provider_noxus.exceptions import NoxusRunError, NoxusRunTimeoutError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor


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
