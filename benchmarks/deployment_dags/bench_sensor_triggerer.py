"""Deployment benchmark: N NoxusRunSensors that start and end in the triggerer (no worker at all).

Airflow 3.3 never starts a mapped task from the triggerer: these are N unmapped sensors, each on a run
the driver created, its id in the DAG run's conf (``runs``), rendered in the triggerer. No DAG when the
installed sensor has no ``start_from_trigger``."""

from __future__ import annotations

from deployment_variants import SENSOR_TASK_PREFIX, VARIANTS_BY_NAME, available, bench_dag, scale

from airflow_provider_noxus.sensors.noxus import NoxusRunSensor

if available(VARIANTS_BY_NAME["sensor_triggerer"]):
    tasks, _, workflow_id = scale()
    with bench_dag("bench_sensor_triggerer"):
        for index in range(tasks):
            NoxusRunSensor(
                task_id=f"{SENSOR_TASK_PREFIX}{index}",
                run_id=f"{{{{ dag_run.conf['runs'][{index}] }}}}",
                workflow_id=workflow_id,
                start_from_trigger=True,
            )
