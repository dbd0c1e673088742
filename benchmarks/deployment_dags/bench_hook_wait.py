"""Deployment benchmark: N mapped ``@task``s that create a run and wait on it with the hook, the naive
way: each holds its worker slot for the whole run."""

from __future__ import annotations

from typing import Any

from airflow.sdk import task
from deployment_variants import MAPPED_TASK_ID, bench_dag, run_inputs, scale

from airflow_provider_noxus.hooks.noxus import NoxusHook

with bench_dag("bench_hook_wait"):

    @task(task_id=MAPPED_TASK_ID)
    def wait_with_hook(item: dict[str, Any]) -> str:
        """Create the run, block until it ends, return its id."""
        workflow_id = scale()[2]
        hook = NoxusHook()
        run_id = str(hook.create_run(workflow_id, item)["id"])
        hook.wait_for_run(workflow_id, run_id)
        return run_id

    wait_with_hook.expand(item=run_inputs())
