"""E2E: a NoxusRunSensor started and ended in the triggerer (no worker) on a run made outside Airflow,
and a downstream task that reads what it left in XCom, as users' tasks do.

Conf: ``workflow_id`` and ``run_id`` of a run, rendered in the triggerer (Airflow 3.3+).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.sensors.noxus import NoxusRunSensor


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"workflow_id": Param("", type="string"), "run_id": Param("", type="string")},
)
def e2e_sensor_from_triggerer() -> None:
    sensor = NoxusRunSensor(
        task_id="wait_for_run",
        run_id="{{ params.run_id }}",
        workflow_id="{{ params.workflow_id }}",
        start_from_trigger=True,
        poll_interval=0.5,
    )

    @task
    def read_back(output: Any, ti: Any = None) -> dict[str, Any]:
        pull = ti.xcom_pull
        return {
            "output": output,
            "run_id": pull(task_ids="wait_for_run", key="run_id"),
            "run_url": pull(task_ids="wait_for_run", key="run_url"),
        }

    read_back(sensor.output)


e2e_sensor_from_triggerer()
