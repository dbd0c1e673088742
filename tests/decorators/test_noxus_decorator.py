"""``@task.noxus`` against the emulator over HTTP: the function's result is the run's inputs, the run's
output (validated by ``output_model`` when given) is the task's result, in every waiting mode.

The decorator is taken from Airflow's ``task`` (as users do), which proves the provider registers it.
Airflow's task runner is not used here (see tests/support/noxus_tasks.py); ``airflow dags test`` of the
same features is in test_noxus_taskflow_dags.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel
from support.noxus_tasks import (
    DictStateStore,
    FakeTaskInstance,
    defer_only,
    make_context,
    run_task,
    use_fast_connection,
)

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS, AirflowFailException
from airflow_provider_noxus.decorators.noxus import noxus_task
from airflow_provider_noxus.exceptions import NoxusOutputValidationError
from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.run_identity import RUN_RECORD_KEY

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import DAG, task
else:  # Airflow 2.11
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]
    from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]

#: (deferrable, use_sync_endpoint) of every way a run's end is read.
MODES = [(True, False), (False, False), (False, True)]
MODE_IDS = ["deferred", "blocking", "sync-endpoint"]


class Echoed(BaseModel):
    """The echo workflow's output, with a default the raw output lacks and a type it must coerce."""

    text: str
    checked: bool = True
    when: datetime | None = None


class Numeric(BaseModel):
    text: int
    score: float


@pytest.fixture
def emu(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


def decorated_task(emu: Any, function: Any, *args: Any, workflow: str = "echo", **kwargs: Any) -> Any:
    """The operator ``@task.noxus(workflow_id=<the emulator's workflow>, **kwargs)`` makes of
    ``function(*args)``."""
    kwargs.setdefault("poll_interval", 0.05)
    with DAG(dag_id=f"dag_{function.__name__}", schedule=None, start_date=datetime(2026, 1, 1)):
        return task.noxus(workflow_id=emu.control.workflow_id(workflow), **kwargs)(function)(*args).operator


def ask(question: str) -> dict[str, Any]:
    return {"text": question}


def created(emu: Any) -> int:
    return int(emu.control.counters()["runs_created_total"])


# ---- registration ------------------------------------------------------------------------------


def test_airflow_task_offers_the_noxus_decorator() -> None:
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Providers
    else:
        from airflow.providers_manager import ProvidersManager as Providers  # type: ignore[assignment]

    assert Providers().taskflow_decorators["noxus"] is noxus_task
    assert task.noxus is noxus_task


# ---- the function's result is the inputs; the output is the result --------------------------------


@pytest.mark.parametrize(("deferrable", "use_sync_endpoint"), MODES, ids=MODE_IDS)
def test_the_function_result_is_the_inputs_and_the_output_the_result(
    emu: Any, deferrable: bool, use_sync_endpoint: bool
) -> None:
    operator = decorated_task(emu, ask, "hello", deferrable=deferrable, use_sync_endpoint=use_sync_endpoint)
    context = make_context()
    assert run_task(operator, context) == {"text": "hello"}
    assert created(emu) == 1
    run_id = context["ti"].xcom["run_id"]
    assert emu.control.run(run_id)["input"] == {"text": "hello"}


def test_context_keys_and_templates_dict_reach_the_function(emu: Any) -> None:
    def greet(name: str, templates_dict: dict[str, Any] | None = None, run_id: str | None = None) -> dict:
        return {"text": f"{(templates_dict or {})['greeting']} {name} in {run_id}"}

    operator = decorated_task(emu, greet, "Ada", templates_dict={"greeting": "hello"})
    context = make_context()
    context["run_id"] = "manual__1"
    assert run_task(operator, context) == {"text": "hello Ada in manual__1"}


def test_the_function_arguments_are_templated_and_inputs_are_not_rendered_again(emu: Any) -> None:
    operator = decorated_task(emu, ask, "{{ 6 * 7 }}")
    assert "op_args" in operator.template_fields and "inputs" not in operator.template_fields
    assert "workflow_id" in operator.template_fields
    operator.op_args = ["{{ '{{' }} 6 * 7 {{ '}}' }} is 42"]  # renders to a template-looking text
    operator.render_template_fields(make_context(), jinja_env=operator.get_template_env())
    assert run_task(operator, make_context()) == {"text": "{{ 6 * 7 }} is 42"}


def test_file_values_in_the_returned_inputs_are_uploaded(emu: Any) -> None:
    def send(payload: bytes) -> dict:
        return {"document": NoxusFile.from_bytes(payload, name="notes.txt")}

    output = run_task(decorated_task(emu, send, b"minutes", workflow="file_info"), make_context())
    assert output["name"] == "notes.txt" and output["size"] == 7


def test_fire_and_forget_returns_the_run_id(emu: Any) -> None:
    context = make_context()
    run_id = decorated_task(emu, ask, "later", wait_for_completion=False).execute(context)
    assert run_id == context["ti"].xcom["run_id"]
    assert created(emu) == 1


# ---- bad functions and arguments: clear errors -----------------------------------------------------


@pytest.mark.parametrize("returned", [["a", "list"], "text", None])
def test_a_function_that_does_not_return_a_dict_fails_naming_the_task(emu: Any, returned: Any) -> None:
    def broken() -> Any:
        return returned

    with pytest.raises(TypeError, match=r"Task 'broken': the @task.noxus function broken\(\) must return"):
        decorated_task(emu, broken).execute(make_context())
    assert created(emu) == 0


def test_inputs_argument_and_async_functions_are_refused_at_parse(emu: Any) -> None:
    with pytest.raises(TypeError, match="drop the inputs= argument"):
        decorated_task(emu, ask, "x", inputs={"text": "y"})

    async def coroutine() -> dict:
        return {}

    with pytest.raises(TypeError, match="must be a plain function"):
        decorated_task(emu, coroutine)


def test_multiple_outputs_is_not_guessed_from_the_return_annotation(emu: Any) -> None:
    # ``ask`` is annotated ``-> dict[str, Any]``: for @task that would mean multiple_outputs=True.
    assert decorated_task(emu, ask, "x").multiple_outputs is False
    assert decorated_task(emu, ask, "x", multiple_outputs=True).multiple_outputs is True
    with pytest.raises(ValueError, match="multiple_outputs=True needs the run's output"):
        decorated_task(emu, ask, "x", multiple_outputs=True, wait_for_completion=False)


@pytest.mark.parametrize("model", [dict, Echoed(text="x"), "Echoed"])
def test_an_output_model_that_is_not_a_pydantic_model_fails_at_parse(emu: Any, model: Any) -> None:
    with pytest.raises(TypeError, match=r"@task.noxus: output_model must be a pydantic model class"):
        task.noxus(workflow_id="wf", output_model=model)
    with pytest.raises(TypeError, match=r"Task 'classic': output_model must be a pydantic model class"):
        NoxusRunOperator(task_id="classic", workflow_id="wf", output_model=model)


def test_an_output_model_needs_the_output(emu: Any) -> None:
    with pytest.raises(ValueError, match="wait_for_completion=False does not wait"):
        decorated_task(emu, ask, "x", output_model=Echoed, wait_for_completion=False)


# ---- output_model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("deferrable", "use_sync_endpoint"), MODES, ids=MODE_IDS)
def test_the_result_is_the_validated_model_as_json_data(
    emu: Any, deferrable: bool, use_sync_endpoint: bool
) -> None:
    operator = decorated_task(
        emu, ask, "hi", output_model=Echoed, deferrable=deferrable, use_sync_endpoint=use_sync_endpoint
    )
    assert run_task(operator, make_context()) == {"text": "hi", "checked": True, "when": None}


def test_the_operator_takes_an_output_model_too(emu: Any) -> None:
    task = NoxusRunOperator(
        task_id="classic",
        workflow_id=emu.control.workflow_id("echo"),
        inputs={"text": "hi"},
        output_model=Echoed,
        poll_interval=0.05,
    )
    assert run_task(task, make_context()) == {"text": "hi", "checked": True, "when": None}


def test_a_validated_model_is_dumped_json_safe(emu: Any) -> None:
    operator = decorated_task(emu, ask, "2026-03-01T10:00:00Z", output_model=Timed)
    assert run_task(operator, make_context()) == {"text": "2026-03-01T10:00:00Z"}


class Timed(BaseModel):
    """A datetime is dumped as ISO text (JSON-safe), not as a datetime object."""

    text: datetime


@pytest.mark.parametrize(("deferrable", "use_sync_endpoint"), MODES, ids=MODE_IDS)
def test_an_output_that_does_not_fit_fails_at_once_naming_fields_run_and_link(
    emu: Any, deferrable: bool, use_sync_endpoint: bool
) -> None:
    operator = decorated_task(
        emu,
        ask,
        "not a number",
        output_model=Numeric,
        deferrable=deferrable,
        use_sync_endpoint=use_sync_endpoint,
    )
    context = make_context()
    with pytest.raises(NoxusOutputValidationError) as raised:
        run_task(operator, context)
    error = raised.value
    assert isinstance(error, AirflowFailException)  # no retries: a retry would read the same output
    run_id = context["ti"].xcom["run_id"]
    run_url = NoxusHook().run_url(operator.workflow_id, run_id)
    assert error.fields == ["text", "score"]
    message = str(error)
    assert "output_model Numeric: 2 fields do not fit" in message
    assert "text: Input should be a valid integer" in message and "(got 'not a number')" in message
    assert "score: Field required" in message
    assert f"run {run_id}" in message and message.endswith(f"See {run_url}")
    assert f"workflow {operator.workflow_id}" in message
    assert created(emu) == 1


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")
def test_after_a_misfit_output_a_clear_makes_a_new_run_and_a_retry_would_not(emu: Any) -> None:
    store = DictStateStore()
    first = make_context(FakeTaskInstance(try_number=1, max_tries=0), store)
    with pytest.raises(NoxusOutputValidationError):
        run_task(decorated_task(emu, ask, "x", output_model=Numeric), first)
    assert store.values[RUN_RECORD_KEY]["delivered"] is False
    # A retry (same max_tries) would reattach to the same completed run and fail the same way.
    retry = make_context(FakeTaskInstance(try_number=2, max_tries=0), store)
    with pytest.raises(NoxusOutputValidationError):
        run_task(decorated_task(emu, ask, "x", output_model=Numeric), retry)
    assert created(emu) == 1
    # A clear (max_tries raised) makes a new run.
    cleared = make_context(FakeTaskInstance(try_number=3, max_tries=3), store)
    assert run_task(decorated_task(emu, ask, "x", output_model=Echoed), cleared)["text"] == "x"
    assert created(emu) == 2


# ---- one run per intent: the intent is what the function returned ----------------------------------


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")
def test_a_retry_reattaches_when_the_function_returns_the_same_inputs(emu: Any) -> None:
    store = DictStateStore()
    defer_only(decorated_task(emu, ask, "same", workflow="echo"), make_context(FakeTaskInstance(1), store))
    retry = make_context(FakeTaskInstance(try_number=2), store)
    assert run_task(decorated_task(emu, ask, "same", deferrable=False), retry) == {"text": "same"}
    assert created(emu) == 1


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")
def test_a_function_whose_result_changes_makes_a_new_run_on_retry_and_stops_the_old(emu: Any) -> None:
    tries = iter([30, 0.1])

    def changing() -> dict:
        return {"seconds": next(tries)}

    store = DictStateStore()
    first = make_context(FakeTaskInstance(1), store)
    defer_only(decorated_task(emu, changing, workflow="slow"), first)
    old_run = first["ti"].xcom["run_id"]
    retry = make_context(FakeTaskInstance(try_number=2), store)
    assert run_task(decorated_task(emu, changing, workflow="slow"), retry) == {"slept": 0.1}
    assert created(emu) == 2
    assert dict(emu.control.counters()["stops"]) == {old_run: 1}
