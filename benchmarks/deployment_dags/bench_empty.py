"""Deployment benchmark: N mapped empty ``@task``s, Airflow's own cost per task (the floor)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import task
from deployment_variants import MAPPED_TASK_ID, bench_dag, run_inputs

with bench_dag("bench_empty"):

    @task(task_id=MAPPED_TASK_ID)
    def nothing(item: dict[str, Any]) -> None:
        """Nothing to do."""

    nothing.expand(item=run_inputs())
