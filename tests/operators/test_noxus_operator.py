"""NoxusRunOperator against the emulator over HTTP: every mode and outcome, timeouts, kill, reattach."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support.noxus_tasks import (
    DictStateStore,
    FakeTaskInstance,
    defer_only,
    first_event,
    make_context,
    run_task,
    use_fast_connection,
)
from support.noxus_tasks import make_operator as operator

from airflow_provider_noxus._compat import AIRFLOW_V_3_3_PLUS, AirflowFailException
from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusConfigurationError,
    NoxusOutputTooLargeError,
    NoxusRunError,
    NoxusRunTimeoutError,
    NoxusValidationError,
)
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.run_identity import RUN_RECORD_KEY
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

#: (deferrable, wait_strategy) of every waiting mode.
MODES = [
    (True, "stream"),
    (True, "poll"),
    (True, "auto"),
    (False, "stream"),
    (False, "poll"),
    (False, "auto"),
]
MODE_IDS = [f"{'deferred' if d else 'blocking'}-{s}" for d, s in MODES]




def counters(emu: Any) -> dict[str, Any]:
    return emu.control.counters()


# ---- success in every mode ------------------------------------------------------------------


@pytest.mark.parametrize(("deferrable", "strategy"), MODES, ids=MODE_IDS)
def test_completed_run_returns_its_output(emu: Any, deferrable: bool, strategy: str) -> None:
    task = operator(emu, "echo", {"text": "hello"}, deferrable=deferrable, wait_strategy=strategy)
    context = make_context()
    assert run_task(task, context) == {"text": "hello"}
    run_id = context["ti"].xcom["run_id"]
    assert context["ti"].xcom["run_url"] == NoxusHook().run_url(task.workflow_id, run_id)
    assert counters(emu)["runs_created_total"] == 1


def test_run_id_and_url_are_pushed_before_the_wait(emu: Any) -> None:
    task = operator(emu, "echo", {"text": "hello"})
    context = make_context()
    deferred = defer_only(task, context)
    assert isinstance(deferred.trigger, NoxusRunTrigger)
    assert deferred.trigger.run_id == context["ti"].xcom["run_id"]
    assert "run_url" in context["ti"].xcom
    assert deferred.method_name == "execute_complete"


def test_fire_and_forget_returns_the_run_id(emu: Any) -> None:
    task = operator(
        emu, "slow", {"seconds": 5}, wait_for_completion=False, callback_url="http://127.0.0.1:9/hook"
    )
    context = make_context()
    run_id = task.execute(context)
    assert run_id == context["ti"].xcom["run_id"]
    assert NoxusHook().get_run_status(run_id)["status"] in ("queued", "running")


@pytest.mark.parametrize("deferrable", [True, False])
def test_sync_endpoint_returns_the_output_in_one_call(emu: Any, deferrable: bool) -> None:
    task = operator(emu, "echo", {"text": "sync"}, use_sync_endpoint=True, deferrable=deferrable)
    context = make_context()
    assert task.execute(context) == {"text": "sync"}  # no deferral: the run is already final
    assert counters(emu)["requests"]["create_run_sync"] == {"200": 1}


def test_sync_endpoint_keys_output_by_node_id(emu: Any) -> None:
    task = operator(emu, "echo", {"text": "ids"}, use_sync_endpoint=True, output_keys_by_id=True)
    output = task.execute(make_context())
    assert list(output.values()) == ["ids"] and "text" not in output


@pytest.mark.parametrize("deferrable", [True, False])
def test_sync_endpoint_504_waits_on_the_same_run(emu: Any, deferrable: bool) -> None:
    emu.control.add_fault("create_run_sync", "sync_timeout")
    task = operator(emu, "echo", {"text": "late"}, use_sync_endpoint=True, deferrable=deferrable)
    context = make_context()
    assert run_task(task, context) == {"text": "late"}
    assert counters(emu)["runs_created_total"] == 1
    assert context["ti"].xcom["run_id"]


def test_a_task_that_defers_closes_its_connection_to_noxus_first(emu: Any) -> None:
    task = operator(emu, "slow", {"seconds": 5})
    adapter = task.hook._transport._session.get_adapter(emu.url)
    defer_only(task, make_context())
    assert len(adapter.poolmanager.pools) == 0, "the pooled connection of the create is closed"
    assert task.hook.get_run(emu.control.workflow_id("slow"), task._active_run_id)["id"], "reopened on use"


def test_already_final_run_is_not_deferred(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("echo")
    finished = NoxusHook().create_run_sync(workflow_id, {"text": "done"})
    task = operator(emu, "echo")
    assert task.deferrable
    assert task.wait_for(make_context(), finished) == {"text": "done"}


# ---- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(("deferrable", "strategy"), MODES, ids=MODE_IDS)
def test_failed_run_raises_with_its_own_message(emu: Any, deferrable: bool, strategy: str) -> None:
    task = operator(emu, "fail", {"message": "model exploded"}, deferrable=deferrable, wait_strategy=strategy)
    context = make_context()
    with pytest.raises(NoxusRunError) as raised:
        run_task(task, context)
    text = str(raised.value)
    run_id = context["ti"].xcom["run_id"]
    for expected in ("failed", "model exploded", task.workflow_id, run_id, context["ti"].xcom["run_url"]):
        assert expected in text
    assert raised.value.status == "failed"


@pytest.mark.parametrize("deferrable", [True, False])
def test_stopped_run_raises(emu: Any, deferrable: bool) -> None:
    task = operator(emu, "slow", {"seconds": 30}, deferrable=deferrable, wait_strategy="poll")
    context = make_context()
    if deferrable:
        deferred = defer_only(task, context)
        NoxusHook().stop_run(context["ti"].xcom["run_id"])
        event = asyncio.run(first_event(deferred.trigger))
        with pytest.raises(NoxusRunError, match="stopped") as raised:
            task.execute_complete(context, event)
    else:
        run_id = NoxusHook().create_run(task.workflow_id, {"seconds": 30})["id"]
        NoxusHook().stop_run(run_id)
        with pytest.raises(NoxusRunError, match="stopped") as raised:
            task.wait_for(context, {"id": run_id, "status": "running"})
    assert raised.value.status == "stopped"


@pytest.mark.parametrize(("deferrable", "strategy"), MODES[:2] + MODES[3:5], ids=MODE_IDS[:2] + MODE_IDS[3:5])
def test_awaiting_feedback_then_completed(emu: Any, deferrable: bool, strategy: str) -> None:
    task = operator(
        emu,
        "human_review",
        {"text": "ok?", "feedback_delay": 0.5},
        deferrable=deferrable,
        wait_strategy=strategy,
    )
    assert run_task(task, make_context()) == {"text": "ok?", "approved": True}


@pytest.mark.parametrize(("deferrable", "strategy"), MODES[:2] + MODES[3:5], ids=MODE_IDS[:2] + MODE_IDS[3:5])
def test_awaiting_feedback_with_fail_stops_the_run(emu: Any, deferrable: bool, strategy: str) -> None:
    task = operator(
        emu,
        "human_review",
        {"text": "ok?", "feedback_delay": 30},
        deferrable=deferrable,
        wait_strategy=strategy,
        on_human_feedback="fail",
    )
    context = make_context()
    with pytest.raises(NoxusRunError, match="human feedback") as raised:
        run_task(task, context)
    run_id = context["ti"].xcom["run_id"]
    assert run_id in str(raised.value)
    assert counters(emu)["stops"] == {run_id: 1}
    assert NoxusHook().get_run_status(run_id)["status"] == "stopped"


def test_wrong_inputs_fail_at_creation_naming_the_input(emu: Any) -> None:
    task = operator(emu, "echo", {"txet": "typo"})
    with pytest.raises(NoxusValidationError, match="txet"):
        task.execute(make_context())
    assert counters(emu)["runs_created_total"] == 0


def test_refused_requests_fail_the_task_without_spending_its_retries(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key or refused inputs will fail again on every try: Airflow must not retry them."""
    use_fast_connection(monkeypatch, emu, password="not-the-key")
    with pytest.raises(NoxusAuthError) as wrong_key:
        operator(emu, "echo", {"text": "hi"}).execute(make_context())
    use_fast_connection(monkeypatch, emu)
    with pytest.raises(NoxusValidationError) as wrong_input:
        operator(emu, "echo", {"txet": "typo"}).execute(make_context())
    for raised in (wrong_key.value, wrong_input.value):
        assert isinstance(raised, AirflowFailException)
    assert counters(emu)["requests"]["create_run"] == {"401": 1, "422": 1}


def test_output_over_the_limit_says_how_to_get_it(emu: Any) -> None:
    task = operator(emu, "echo", {"text": "x" * 200}, max_output_bytes=100)
    with pytest.raises(NoxusOutputTooLargeError, match=r"max_output_bytes=100.*get_run"):
        run_task(task, make_context())


# ---- timeouts and kill ----------------------------------------------------------------------


@pytest.mark.parametrize(("deferrable", "strategy"), MODES[:2] + MODES[3:5], ids=MODE_IDS[:2] + MODE_IDS[3:5])
def test_timeout_stops_the_run_and_fails(emu: Any, deferrable: bool, strategy: str) -> None:
    task = operator(emu, "slow", {"seconds": 30}, deferrable=deferrable, wait_strategy=strategy, timeout=0.5)
    context = make_context()
    with pytest.raises(NoxusRunTimeoutError) as raised:
        run_task(task, context)
    run_id = context["ti"].xcom["run_id"]
    for expected in (task.workflow_id, run_id, context["ti"].xcom["run_url"], "asked to stop"):
        assert expected in str(raised.value)
    assert counters(emu)["stops"] == {run_id: 1}


def test_deadline_ends_before_execution_timeout(emu: Any) -> None:
    task = operator(emu, "slow", {"seconds": 30}, timeout=3600, execution_timeout=timedelta(minutes=10))
    started = datetime.now(timezone.utc) - timedelta(minutes=4)
    deferred = defer_only(task, make_context(FakeTaskInstance(start_date=started)))
    six_minutes_left = started.timestamp() + 600
    assert six_minutes_left - 11 < deferred.trigger.deadline < six_minutes_left
    assert deferred.timeout is not None and deferred.timeout.total_seconds() > 6 * 60 - 11


def test_on_kill_stops_the_run(emu: Any) -> None:
    task = operator(emu, "slow", {"seconds": 30})
    context = make_context()
    defer_only(task, context)
    task.on_kill()
    assert counters(emu)["stops"] == {context["ti"].xcom["run_id"]: 1}


def test_on_kill_without_cancel_leaves_the_run(emu: Any) -> None:
    task = operator(emu, "slow", {"seconds": 30}, cancel_on_kill=False)
    defer_only(task, make_context())
    task.on_kill()
    assert counters(emu)["stops_total"] == 0


# ---- exactly one run per task instance ------------------------------------------------------

needs_store = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")


@needs_store
def test_retry_after_a_crash_reattaches_to_the_running_run(emu: Any) -> None:
    store = DictStateStore()
    first_try = operator(emu, "slow", {"seconds": 1})
    defer_only(first_try, make_context(FakeTaskInstance(try_number=1), store))  # the worker dies here
    run_id = store.values[RUN_RECORD_KEY]["run_id"]

    retry = operator(emu, "slow", {"seconds": 1})
    context = make_context(FakeTaskInstance(try_number=2), store)
    assert run_task(retry, context) == {"slept": 1}
    assert context["ti"].xcom["run_id"] == run_id
    assert counters(emu)["runs_created_total"] == 1


@needs_store
def test_retry_after_a_crash_in_execute_complete_returns_the_output_without_a_new_run(emu: Any) -> None:
    store = DictStateStore()
    first_try = operator(emu, "echo", {"text": "once"})
    deferred = defer_only(first_try, make_context(store=store))
    assert asyncio.run(first_event(deferred.trigger))["status"] == "success"
    # The worker dies before execute_complete: the run completed but its output was never delivered.
    retry = operator(emu, "echo", {"text": "once"})
    assert retry.execute(make_context(FakeTaskInstance(try_number=2), store)) == {"text": "once"}
    assert counters(emu)["runs_created_total"] == 1


@needs_store
def test_retry_after_a_failed_run_creates_a_new_one(emu: Any) -> None:
    store = DictStateStore()
    with pytest.raises(NoxusRunError):
        run_task(operator(emu, "fail"), make_context(store=store))
    first_run = store.values[RUN_RECORD_KEY]["run_id"]
    with pytest.raises(NoxusRunError):
        run_task(operator(emu, "fail"), make_context(FakeTaskInstance(try_number=2), store))
    assert store.values[RUN_RECORD_KEY]["run_id"] != first_run
    assert counters(emu)["runs_created_total"] == 2


def test_without_a_store_a_retry_creates_a_new_run(emu: Any) -> None:
    run_task(operator(emu, "echo", {"text": "a"}), make_context())
    run_task(operator(emu, "echo", {"text": "a"}), make_context(FakeTaskInstance(try_number=2)))
    assert counters(emu)["runs_created_total"] == 2


# ---- parse-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wait_strategy": "push"}, "wait_strategy"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"on_human_feedback": "skip"}, "on_human_feedback"),
        ({"callback_url": "ftp://example.org/hook"}, "callback_url"),
        ({"timeout": 0}, "timeout"),
        ({"use_sync_endpoint": True, "wait_for_completion": False}, "use_sync_endpoint"),
        ({"output_keys_by_id": True}, "output_keys_by_id"),
        ({"max_output_bytes": 0}, "max_output_bytes"),
        ({"workflow_id": ""}, "workflow_id"),
    ],
)
def test_bad_arguments_fail_at_parse(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("workflow_id", "wf")
    with pytest.raises(ValueError, match=message):
        NoxusRunOperator(task_id="bad", **kwargs)


def test_templated_callback_url_is_checked_once_rendered_before_anything_is_sent(emu: Any) -> None:
    task = operator(emu, "echo", {"text": "x"}, callback_url="{{ hook_url }}")  # not refused at parse
    task.render_template_fields({"hook_url": "ftp://hooks.example.org/x"})  # type: ignore[arg-type]
    with pytest.raises(NoxusConfigurationError, match=r"'run_echo': callback_url .*'ftp://.*not an http"):
        run_task(task, make_context())
    assert emu.control.counters()["requests"] == {}
