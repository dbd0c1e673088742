"""E2E: one mapped NoxusRunOperator per item, each waiting deferred on the emulator's ``slow`` workflow.

Conf: ``count`` (mapped task instances) and ``seconds`` (length of each Noxus run). Retries absorb
Airflow 3.3.2's spurious failures of concurrently deferred tasks; the operator must reattach to its
run on a retry instead of creating another.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.operators.noxus import NoxusRunOperator


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"count": Param(50, type="integer"), "seconds": Param(5, type="number")},
    default_args={"retries": 3, "retry_delay": timedelta(seconds=2)},
    max_active_tasks=100,
)
def e2e_fan_out() -> None:
    @task
    def make_inputs(params: dict | None = None) -> list[dict]:
        conf = params or {}
        return [{"seconds": conf["seconds"]} for _ in range(int(conf["count"]))]

    runs = NoxusRunOperator.partial(
        task_id="wait_for_run",
        workflow_id="{{ var.value.noxus_e2e_slow_workflow }}",
        wait_strategy="poll",
        poll_interval=1.0,
    ).expand(inputs=make_inputs())

    @task
    def gather(outputs: list[dict]) -> dict[str, int]:
        """How many outputs of each type the downstream task received (dicts, as the runs returned)."""
        kinds: dict[str, int] = {}
        for output in outputs:
            kinds[type(output).__name__] = kinds.get(type(output).__name__, 0) + 1
        return kinds

    gather(runs.output)


e2e_fan_out()
