"""Deployment benchmark: N mapped NoxusRunOperators that end in the triggerer (no resume on a worker).

No DAG when the installed operator has no ``end_from_trigger``."""

from __future__ import annotations

from deployment_variants import MAPPED_TASK_ID, VARIANTS_BY_NAME, available, bench_dag, run_inputs, scale

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

if available(VARIANTS_BY_NAME["operator_triggerer"]):
    with bench_dag("bench_operator_triggerer"):
        NoxusRunOperator.partial(
            task_id=MAPPED_TASK_ID, workflow_id=scale()[2], end_from_trigger=True
        ).expand(inputs=run_inputs())
