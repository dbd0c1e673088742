"""Tasks that end in the triggerer (``end_from_trigger=True``, the default), row by row, against the emulator.

Each test defers the task on the "worker" (``execute``), runs its trigger to its one event, and checks
what Airflow would do with that event: a ``TaskSuccessEvent`` (XComs pushed, no worker), a
``TaskFailedEvent`` (the error in the task's log, retries counted by Airflow 3.3), or a plain event that
resumes the task on a worker when ending it in the triggerer would break a rule (the log says why).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.noxus_tasks import (
    DictStateStore,
    FakeTaskInstance,
    TaskFailedInTriggerer,
    defer_only,
    first_trigger_event,
    make_context,
    run_task,
    task_end,
    use_fast_connection,
)
from support.noxus_tasks import make_operator as operator

from airflow_provider_noxus._compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_3_PLUS,
    AirflowFailException,
    TaskFailedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)
from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusOutputTooLargeError, NoxusRunError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

needs_store = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")
EVENT_LIMIT_S = 60.0


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


@pytest.fixture
def task_log(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Any:
    """``task_log()``: what the task and its trigger logged so far (Airflow 3 writes to stdout too)."""
    caplog.set_level("INFO")
    return lambda: caplog.text + capsys.readouterr().out


def ending(emu: Any, workflow: str, inputs: dict[str, Any], **kwargs: Any) -> NoxusRunOperator:
    return operator(emu, workflow, inputs, end_from_trigger=True, **kwargs)  # type: ignore[no-any-return]


def fire(trigger: NoxusRunTrigger) -> Any:
    """The trigger's one event, within a bound."""
    return asyncio.run(asyncio.wait_for(first_trigger_event(trigger), EVENT_LIMIT_S))


def fire_and_push(trigger: NoxusRunTrigger) -> tuple[Any, dict[str, Any]]:
    """The trigger's one event and the XComs the task ends with, within a bound."""
    return asyncio.run(asyncio.wait_for(task_end(trigger), EVENT_LIMIT_S))


def stops(emu: Any) -> int:
    return int(emu.control.counters()["stops_total"])


def test_it_is_the_default() -> None:
    assert NoxusRunOperator(task_id="t", workflow_id="w").ends_in_triggerer is True
    assert NoxusRunSensor(task_id="s", run_id="r", workflow_id="w").ends_in_triggerer is True
    assert NoxusRunOperator(task_id="t", workflow_id="w", end_from_trigger=False).ends_in_triggerer is False


def test_a_dag_still_loads_with_listener_plugins_and_the_task_then_resumes_on_the_worker(
    emu: Any, task_log: Any
) -> None:
    if AIRFLOW_V_3_0_PLUS:
        from airflow.listeners.listener import get_listener_manager as dag_processor_listeners
        from airflow.sdk.listener import get_listener_manager as worker_listeners
    else:
        from airflow.listeners.listener import get_listener_manager as dag_processor_listeners

        worker_listeners = dag_processor_listeners

    class Listener:
        pass

    task = ending(emu, "echo", {"text": "hi"})
    # Airflow's DAG bag refuses a task with a true ``end_from_trigger`` attribute while listeners exist.
    assert getattr(task, "end_from_trigger", False) is False
    for manager in {id(m): m for m in (dag_processor_listeners(), worker_listeners())}.values():
        manager.add_listener(Listener())
    try:
        assert type(fire(defer_only(task, make_context()).trigger)) is TriggerEvent
    finally:
        for manager in (dag_processor_listeners(), worker_listeners()):
            manager.clear()
    assert "listener plugins are registered" in task_log()


def test_success_ends_the_task_in_the_triggerer_with_the_output_and_the_run_link(emu: Any) -> None:
    context = make_context()
    deferred = defer_only(ending(emu, "echo", {"text": "hello"}), context)
    event, xcoms = fire_and_push(deferred.trigger)
    assert isinstance(event, TaskSuccessEvent)
    run_id = context["ti"].xcom["run_id"]
    assert xcoms == {"return_value": {"text": "hello"}}, "the worker pushed run_id and run_url"
    assert context["ti"].xcom["run_url"].endswith(run_id)
    assert json.loads(json.dumps(deferred.trigger.serialize()[1]))["end_from_trigger"] is True


def test_do_xcom_push_false_ends_without_a_return_value(emu: Any) -> None:
    deferred = defer_only(ending(emu, "echo", {"text": "hello"}, do_xcom_push=False), make_context())
    event, xcoms = fire_and_push(deferred.trigger)
    assert isinstance(event, TaskSuccessEvent) and "return_value" not in xcoms


@pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS, reason="Airflow 2 resumes to fail: its failed event skips retries"
)
def test_a_failed_run_fails_the_task_with_its_error_workflow_run_and_link_in_the_task_log(
    emu: Any, task_log: Any
) -> None:
    context = make_context()
    task = ending(emu, "fail", {"message": "model exploded"})
    with pytest.raises(TaskFailedInTriggerer):
        run_task(task, context)
    log = task_log()
    assert "Noxus run ended failed: model exploded" in log
    assert f"workflow {task.workflow_id}" in log and f"run {context['ti'].xcom['run_id']}" in log
    assert context["ti"].xcom["run_url"] in log


@pytest.mark.skipif(AIRFLOW_V_3_0_PLUS, reason="Airflow 2 only")
def test_on_airflow_2_a_failure_resumes_on_the_worker_which_raises_it(emu: Any, task_log: Any) -> None:
    task = ending(emu, "fail", {"message": "model exploded"})
    deferred = defer_only(task, make_context())
    event = fire(deferred.trigger)
    assert type(event) is TriggerEvent
    with pytest.raises(NoxusRunError, match="model exploded"):
        task.execute_complete(make_context(), event=event.payload)
    assert "Airflow 2 skips the retries" in task_log()


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2 resumes to fail")
def test_refused_human_feedback_stops_the_run_and_fails(emu: Any, task_log: Any) -> None:
    task = ending(emu, "human_review", {"text": "?", "feedback_delay": 30}, on_human_feedback="fail")
    deferred = defer_only(task, make_context())
    assert isinstance(fire(deferred.trigger), TaskFailedEvent)
    assert stops(emu) == 1
    assert "on_human_feedback='fail'; it was asked to stop" in task_log()


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2 resumes to fail")
def test_the_deadline_stops_the_run_and_fails(emu: Any, task_log: Any) -> None:
    task = ending(emu, "slow", {"seconds": 30}, timeout=0.5, wait_strategy="poll")
    deferred = defer_only(task, make_context())
    assert isinstance(fire(deferred.trigger), TaskFailedEvent)
    assert stops(emu) == 1
    assert "at the wait's deadline (timeout=0.5 s); it was asked to stop" in task_log()


def test_a_sensor_ends_in_the_triggerer_and_never_stops_the_run(emu: Any, task_log: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    run_id = NoxusHook().create_run(workflow_id, {"seconds": 30})["id"]
    sensor = NoxusRunSensor(
        end_from_trigger=True,
        task_id="wait",
        run_id=run_id,
        workflow_id=workflow_id,
        timeout=0.5,
        poll_interval=0.05,
        wait_strategy="poll",
    )
    event = fire(defer_only(sensor, make_context()).trigger)
    assert isinstance(event, TaskFailedEvent if AIRFLOW_V_3_0_PLUS else TriggerEvent)
    assert stops(emu) == 0


# ---- rows that resume on a worker ----------------------------------------------------------------


def test_a_refused_key_resumes_on_the_worker_to_fail_without_retries(
    emu: Any, monkeypatch: pytest.MonkeyPatch, task_log: Any
) -> None:
    task = ending(emu, "slow", {"seconds": 30})
    deferred = defer_only(task, make_context())
    use_fast_connection(monkeypatch, emu, password="nxk-not-a-valid-key")
    event = fire(deferred.trigger)
    assert type(event) is TriggerEvent, "a task failed in the triggerer would spend its retries"
    with pytest.raises(NoxusAuthError) as raised:
        task.execute_complete(make_context(), event=event.payload)
    assert isinstance(raised.value, AirflowFailException)
    assert "resumes on a worker to fail" in task_log()


def test_an_output_over_the_limit_resumes_on_the_worker_to_fail_without_retries(emu: Any) -> None:
    task = ending(emu, "echo", {"text": "x" * 500}, max_output_bytes=100)
    event = fire(defer_only(task, make_context()).trigger)
    assert type(event) is TriggerEvent
    with pytest.raises(NoxusOutputTooLargeError, match="max_output_bytes=100"):
        task.execute_complete(make_context(), event=event.payload)


class CustomResume(NoxusRunOperator):
    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        return {"custom": super().execute_complete(context, event)}


def test_a_subclass_that_overrides_execute_complete_resumes_on_the_worker(emu: Any, task_log: Any) -> None:
    task = CustomResume(
        task_id="custom",
        workflow_id=emu.control.workflow_id("echo"),
        inputs={"text": "hi"},
        end_from_trigger=True,
        poll_interval=0.05,
    )
    assert run_task(task, make_context()) == {"custom": {"text": "hi"}}
    assert "CustomResume overrides execute_complete" in task_log()


def test_a_task_with_outlets_resumes_on_the_worker(emu: Any, task_log: Any) -> None:
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import Asset
    else:
        from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    task = ending(emu, "echo", {"text": "hi"}, outlets=[Asset("s3://bucket/summaries")])
    assert type(fire(defer_only(task, make_context()).trigger)) is TriggerEvent
    assert "the task has outlets" in task_log()


class SilentTriggerer:
    """A triggerer's supervisor that never answers an XCom push."""

    async def asend(self, message: Any) -> None:
        await asyncio.sleep(3600)


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2 keeps the XComs in the end event")
def test_an_output_push_the_triggerer_never_answers_resumes_the_task_on_the_worker(
    emu: Any, monkeypatch: pytest.MonkeyPatch, task_log: Any
) -> None:
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    from airflow_provider_noxus.triggers import noxus as trigger_module

    monkeypatch.setattr(trigger_module, "XCOM_PUSH_TIMEOUT_S", 0.2)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", SilentTriggerer(), raising=False)
    trigger = defer_only(ending(emu, "echo", {"text": "hi"}), make_context()).trigger
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)

    async def first() -> Any:
        events = trigger.run()
        try:
            return await events.__anext__()
        finally:
            await events.aclose()

    event = asyncio.run(asyncio.wait_for(first(), EVENT_LIMIT_S))
    assert type(event) is TriggerEvent and event.payload["status"] == "success"
    assert "resumes on a worker to push its output" in task_log()


def test_a_task_whose_output_a_downstream_task_maps_over_resumes_on_the_worker(
    emu: Any, task_log: Any
) -> None:
    """Airflow records an output's length for the downstream expansion only when a worker pushes it."""
    from datetime import datetime

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import DAG, task
    else:
        from airflow.decorators import task  # type: ignore[no-redef]
        from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]
    with DAG("maps_over_output", schedule=None, start_date=datetime(2026, 1, 1)):
        mapped_over = ending(emu, "echo", {"text": "hi"})

        @task
        def each(item: Any) -> Any:
            return item

        each.expand(item=mapped_over.output)
    with DAG("reads_the_output", schedule=None, start_date=datetime(2026, 1, 1)):
        plain = ending(emu, "echo", {"text": "hi"})
        each(plain.output)
    assert type(fire(defer_only(mapped_over, make_context()).trigger)) is TriggerEvent
    assert "a downstream task maps over its output" in task_log()
    assert isinstance(fire(defer_only(plain, make_context()).trigger), TaskSuccessEvent)


@pytest.mark.skipif(
    AIRFLOW_V_3_0_PLUS, reason="Airflow 3's dag-processor runs a trigger-ended task's callbacks"
)
def test_on_airflow_2_a_success_callback_without_a_standalone_dag_processor_resumes_on_the_worker(
    emu: Any, monkeypatch: pytest.MonkeyPatch, task_log: Any
) -> None:
    monkeypatch.setenv("AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR", "False")
    task = ending(emu, "echo", {"text": "hi"}, on_success_callback=lambda context: None)
    assert type(fire(defer_only(task, make_context()).trigger)) is TriggerEvent
    assert "standalone_dag_processor" in task_log()
    monkeypatch.setenv("AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR", "True")
    task = ending(emu, "echo", {"text": "hi"}, on_success_callback=lambda context: None)
    assert isinstance(fire(defer_only(task, make_context()).trigger), TaskSuccessEvent)


# ---- on_kill, retries and clears -----------------------------------------------------------------


def test_on_kill_of_the_trigger_stops_the_run_unless_cancel_on_kill_is_off(emu: Any) -> None:
    killing = defer_only(ending(emu, "slow", {"seconds": 30}), make_context()).trigger
    keeping = defer_only(ending(emu, "slow", {"seconds": 30}, cancel_on_kill=False), make_context()).trigger
    assert killing.cancel_on_kill and not keeping.cancel_on_kill
    asyncio.run(asyncio.wait_for(keeping.on_kill(), EVENT_LIMIT_S))
    assert stops(emu) == 0


@needs_store
def test_a_clear_after_a_success_in_the_triggerer_makes_one_new_run(emu: Any) -> None:
    store = DictStateStore()
    first = make_context(FakeTaskInstance(try_number=1, max_tries=0), store)
    assert run_task(ending(emu, "echo", {"text": "a"}), first) == {"text": "a"}
    cleared = make_context(FakeTaskInstance(try_number=2, max_tries=1), store)  # a clear raises max_tries
    assert run_task(ending(emu, "echo", {"text": "a"}), cleared) == {"text": "a"}
    assert emu.control.counters()["runs_created_total"] == 2
    assert cleared["ti"].xcom["run_id"] != first["ti"].xcom["run_id"]
    assert stops(emu) == 0, "the completed run of the first try is not stopped"


@needs_store
def test_a_retry_after_a_failure_in_the_triggerer_makes_at_most_one_new_run(emu: Any) -> None:
    store = DictStateStore()
    first = make_context(FakeTaskInstance(try_number=1, max_tries=2), store)
    with pytest.raises(TaskFailedInTriggerer):
        run_task(ending(emu, "slow", {"seconds": 30}, timeout=0.5, wait_strategy="poll"), first)
    retry = make_context(FakeTaskInstance(try_number=2, max_tries=2), store)
    with pytest.raises(TaskFailedInTriggerer):
        run_task(ending(emu, "slow", {"seconds": 30}, timeout=0.5, wait_strategy="poll"), retry)
    counters = emu.control.counters()
    assert (counters["runs_created_total"], counters["stops_total"]) == (2, 2), (
        "the stopped run is replaced once"
    )
    assert retry["ti"].xcom["run_id"] != first["ti"].xcom["run_id"]


@needs_store
def test_a_retry_reattaches_to_a_run_whose_trigger_never_ended_the_task(emu: Any) -> None:
    store = DictStateStore()
    first = make_context(FakeTaskInstance(try_number=1, max_tries=2), store)
    defer_only(ending(emu, "slow", {"seconds": 1}), first)  # the triggerer dies for good here
    retry = make_context(FakeTaskInstance(try_number=2, max_tries=2), store)
    assert run_task(ending(emu, "slow", {"seconds": 1}), retry) is not None
    assert emu.control.counters()["runs_created_total"] == 1
    assert retry["ti"].xcom["run_id"] == first["ti"].xcom["run_id"]


# ---- output_model -----------------------------------------------------------------------------


def test_an_importable_output_model_is_checked_in_the_triggerer(emu: Any) -> None:
    from support.output_models import EchoedText

    deferred = defer_only(ending(emu, "echo", {"text": "hello"}, output_model=EchoedText), make_context())
    assert deferred.trigger.serialize()[1]["output_model"] == "support.output_models.EchoedText"
    event, xcoms = fire_and_push(deferred.trigger)
    assert isinstance(event, TaskSuccessEvent)
    assert xcoms == {"return_value": {"text": "hello"}}


def test_an_output_that_does_not_fit_resumes_on_the_worker_to_fail_without_retries(emu: Any) -> None:
    from support.output_models import EchoedNumber

    from airflow_provider_noxus.exceptions import NoxusOutputValidationError

    task = ending(emu, "echo", {"text": "forty-two"}, output_model=EchoedNumber)
    event = fire(defer_only(task, make_context()).trigger)
    assert type(event) is TriggerEvent
    with pytest.raises(NoxusOutputValidationError, match="text") as failed:
        task.execute_complete(make_context(), event=event.payload)
    assert isinstance(failed.value, AirflowFailException)


def test_an_output_model_the_triggerer_cannot_import_resumes_on_the_worker(emu: Any, task_log: Any) -> None:
    from pydantic import BaseModel

    class Local(BaseModel):
        text: str

    task = ending(emu, "echo", {"text": "hello"}, output_model=Local)
    deferred = defer_only(task, make_context())
    assert deferred.trigger.serialize()[1]["end_from_trigger"] is False
    assert "triggerer cannot import it" in task_log()
    event = fire(deferred.trigger)
    assert task.execute_complete(make_context(), event=event.payload) == {"text": "hello"}
