"""The variants of the deployment benchmark (:mod:`deployment_cost`), in one place for their DAG files
(``deployment_dags/``, one file per variant, as a user's DAG file holds its own DAG: every task process
parses its file) and the driver.

A variant whose argument the installed provider does not accept (``end_from_trigger`` of
:class:`~airflow_provider_noxus.operators.noxus.NoxusRunOperator`, ``start_from_trigger`` of
:class:`~airflow_provider_noxus.sensors.noxus.NoxusRunSensor`) has no DAG and is reported as "not
available in this build". The signature is what tells: Airflow's ``BaseOperator`` takes
``start_from_trigger`` too, but without the sensor's own support it would start no trigger of ours.

The DAG files read the scale from the environment the driver gives every component:
:data:`TASKS_VARIABLE`, :data:`SECONDS_VARIABLE` and :data:`WORKFLOW_VARIABLE`.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import DAG

#: Tasks per variant (the fan-out's width), length of each Noxus run in seconds, and the workflow.
TASKS_VARIABLE = "NOXUS_BENCH_TASKS"
SECONDS_VARIABLE = "NOXUS_BENCH_RUN_SECONDS"
WORKFLOW_VARIABLE = "NOXUS_BENCH_WORKFLOW"
#: The task id of every mapped variant; the sensor variant's tasks are ``sensor_0`` .. ``sensor_<N-1>``.
MAPPED_TASK_ID = "fan_out"
SENSOR_TASK_PREFIX = "sensor_"
#: The warm-up DAG, run once before measuring: first-use costs (imports, the api-server's first calls,
#: every worker slot's first task) fall on it, not on the first variant.
WARM_UP_DAG_ID = "bench_warm_up"
WARM_UP_TASKS = 8


@dataclass(frozen=True)
class Variant:
    """One way of running N tasks, measured side by side with the others.

    :param name: short name (table, JSON).
    :param dag_id: its DAG in the DAG file.
    :param label: what it is, for the table.
    :param run_xcom_key: the XCom key under which each task pushes its Noxus run's id; None when the
        task has no run or the driver creates the runs.
    :param runs_from_driver: the driver creates the N runs and passes their ids in the conf (``runs``).
    :param needs: ``(class name, argument)`` the installed provider must accept, or None.
    """

    name: str
    dag_id: str
    label: str
    run_xcom_key: str | None = None
    runs_from_driver: bool = False
    needs: tuple[str, str] | None = None

    @property
    def noxus(self) -> bool:
        """Whether each task waits on a Noxus run (so has a run end to measure from)."""
        return self.run_xcom_key is not None or self.runs_from_driver


VARIANTS = (
    Variant("empty", "bench_empty", "empty @task (Airflow's floor)"),
    Variant("empty_provider", "bench_empty_provider", "empty @task, its DAG file imports the provider"),
    Variant(
        "operator_worker",
        "bench_operator_worker",
        "NoxusRunOperator, resumes on a worker",
        run_xcom_key="run_id",
    ),
    Variant(
        "operator_triggerer",
        "bench_operator_triggerer",
        "NoxusRunOperator, ends in the triggerer",
        run_xcom_key="run_id",
        needs=("NoxusRunOperator", "end_from_trigger"),
    ),
    Variant(
        "sensor_triggerer",
        "bench_sensor_triggerer",
        "NoxusRunSensor, starts and ends in the triggerer (N unmapped tasks)",
        runs_from_driver=True,
        needs=("NoxusRunSensor", "start_from_trigger"),
    ),
    Variant(
        "hook_wait",
        "bench_hook_wait",
        "@task waiting with the hook (holds a slot)",
        run_xcom_key="return_value",
    ),
)
VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}


def provider_classes() -> dict[str, type]:
    """The provider's operator and sensor, by class name."""
    from airflow_provider_noxus.operators.noxus import NoxusRunOperator
    from airflow_provider_noxus.sensors.noxus import NoxusRunSensor

    return {"NoxusRunOperator": NoxusRunOperator, "NoxusRunSensor": NoxusRunSensor}


def accepts(cls: type, argument: str) -> bool:
    """Whether ``cls.__init__`` names ``argument`` itself (not merely through ``**kwargs``)."""
    return argument in inspect.signature(cls.__init__).parameters  # type: ignore[misc]


def available(variant: Variant) -> bool:
    """Whether the installed provider can run the variant."""
    if variant.needs is None:
        return True
    class_name, argument = variant.needs
    return accepts(provider_classes()[class_name], argument)


def unavailable_reason(variant: Variant) -> str:
    """Why the variant is left out, for the report."""
    class_name, argument = variant.needs or ("", "")
    return f"not available in this build: {class_name} has no {argument!r} argument"


def scale() -> tuple[int, float, str]:
    """``(tasks, run seconds, workflow id)`` as the driver set them for the components."""
    return (
        int(os.environ.get(TASKS_VARIABLE, "3")),
        float(os.environ.get(SECONDS_VARIABLE, "3")),
        os.environ.get(WORKFLOW_VARIABLE, "slow"),
    )


def run_inputs() -> list[dict[str, Any]]:
    """The inputs of the N mapped tasks, one Noxus run of the configured length each."""
    tasks, seconds, _ = scale()
    return [{"seconds": seconds}] * tasks


def bench_dag(dag_id: str) -> DAG:
    """A benchmark DAG: manual runs only, every task free to run at once, retries as in the e2e tests
    (Airflow 3.3.2 fails a few concurrently deferred tasks spuriously; the driver reports retries)."""
    from airflow.sdk import DAG

    return DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_tasks=max(16, scale()[0]),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
        tags=["benchmark"],
    )


def empty_fan_out(dag_id: str) -> DAG:
    """N mapped ``@task``s that do nothing: Airflow's own cost of a task."""
    from airflow.sdk import task

    with bench_dag(dag_id) as dag:

        @task(task_id=MAPPED_TASK_ID)
        def nothing(item: dict[str, Any]) -> None:
            """Nothing to do."""

        nothing.expand(item=run_inputs())
    return dag
