"""Deployment benchmark: run once before measuring, so that first-use costs (imports, the api-server's
first calls, every worker slot's first task, the provider's first run) fall on no variant."""

from __future__ import annotations

from airflow.sdk import task
from deployment_variants import WARM_UP_DAG_ID, WARM_UP_TASKS, bench_dag, scale

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

with bench_dag(WARM_UP_DAG_ID):

    @task
    def nothing(item: int) -> None:
        """Nothing to do."""

    nothing.expand(item=list(range(WARM_UP_TASKS)))
    NoxusRunOperator.partial(task_id="noxus", workflow_id=scale()[2]).expand(
        inputs=[{"seconds": 1}] * (WARM_UP_TASKS // 2)
    )
