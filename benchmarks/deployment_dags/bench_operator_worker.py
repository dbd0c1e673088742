"""Deployment benchmark: N mapped NoxusRunOperators that resume on a worker when their run ends."""

from __future__ import annotations

from deployment_variants import MAPPED_TASK_ID, accepts, bench_dag, run_inputs, scale

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

# Resuming on a worker is what the operator does without end_from_trigger: ask for it, should the
# build have the argument (it may default to ending in the triggerer).
options = {"end_from_trigger": False} if accepts(NoxusRunOperator, "end_from_trigger") else {}

with bench_dag("bench_operator_worker"):
    NoxusRunOperator.partial(task_id=MAPPED_TASK_ID, workflow_id=scale()[2], **options).expand(
        inputs=run_inputs()
    )
