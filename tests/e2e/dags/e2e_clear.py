"""E2E: one Noxus run of ``seconds`` (param), for the tests that clear the task while it waits or after it
succeeded. A clear is a user asking for the task to run again: the waiting run is stopped (the trigger's
``on_kill``) and the next try creates a new run.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

with DAG(
    "e2e_clear",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"seconds": Param(20, type="number")},
    render_template_as_native_obj=True,
):
    NoxusRunOperator(
        task_id="cleared_run",
        workflow_id="{{ var.value.noxus_e2e_slow_workflow }}",
        inputs={"seconds": "{{ params.seconds }}"},
        wait_strategy="poll",
        poll_interval=1.0,
        retries=0,
    )
