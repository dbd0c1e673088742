"""E2E (distributed): Noxus tasks on the Celery queue ``crash``, for a test that SIGKILLs their worker.

Only the worker the test kills (and its replacement) consume ``crash``, so every task below runs there.

- ``e2e_worker_crash_blocking``: ``count`` runs of ``seconds`` each, waited on the worker
  (``deferrable=False``): killed in a blocking wait.
- ``e2e_worker_crash_create``: ``count`` runs; the emulator makes them, then holds the answers to
  their create requests while the test kills the worker: killed in ``create``, the runs made.

Retries let Airflow's own recovery (the task heartbeat timeout) run the lost tries again; the operator
must reattach to a run it created instead of creating another.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

QUEUE = "crash"
#: dag_id -> the mapped NoxusRunOperator's own arguments.
CASES = {
    "e2e_worker_crash_blocking": {"task_id": "blocking_wait", "deferrable": False},
    "e2e_worker_crash_create": {"task_id": "in_create"},
}

for dag_id, operator_kwargs in CASES.items():
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"count": Param(2, type="integer"), "seconds": Param(30, type="number")},
        default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
    ):

        @task
        def make_inputs(params: dict | None = None) -> list[dict]:
            conf = params or {}
            # Distinct inputs: identical creates lost at the same moment are indistinguishable to the
            # API, and the operator then adopts neither (README, "Exactly one Noxus run per task").
            return [{"seconds": conf["seconds"] + index / 100} for index in range(int(conf["count"]))]

        NoxusRunOperator.partial(
            workflow_id="{{ var.value.noxus_e2e_slow_workflow }}",
            wait_strategy="poll",
            poll_interval=1.0,
            queue=QUEUE,
            **operator_kwargs,
        ).expand(inputs=make_inputs())
