"""Start a Noxus run, then wait for it deferred, polling its status from the triggerer.

Recipe "create, then poll": the task creates the run and hands the wait to the triggerer
(``deferrable=True`` is the default), which reads ``GET /v1/workflows/{id}/runs/{run_id}`` every
``poll_interval`` seconds. While it waits, the task holds no worker slot, however long the run is.
``timeout`` bounds the whole wait: past it the run is stopped and the task fails.

The default workflow is the emulator's ``slow`` workflow, which runs for ``seconds`` seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from airflow_provider_noxus.operators.noxus import NoxusRunOperator


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["noxus", "example"],
    doc_md=__doc__,
    # Retries absorb transient failures; a retried Noxus task reattaches to the run it started.
    # "{{ params.seconds }}" renders to the number itself, not its text: the input is a number.
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    params={
        "workflow_id": Param("e2b79f2a-980e-5748-97df-64ff4bd0c2b1", type="string"),
        "seconds": Param(3, type="number"),
    },
)
def noxus_deferred_poll() -> None:
    NoxusRunOperator(
        task_id="slow_run",
        workflow_id="{{ params.workflow_id }}",
        inputs={"seconds": "{{ params.seconds }}"},
        wait_strategy="poll",
        poll_interval=1.0,
        timeout=timedelta(minutes=10),
    )


noxus_deferred_poll()
