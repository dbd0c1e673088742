"""Fire and forget, then a deferred sensor waits for that run and returns its output."""

from __future__ import annotations

from _noxus_test_common import DAG, ECHO_WORKFLOW_ID, FAST, START_DATE

from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor

with DAG(dag_id="noxus_test_fire_and_forget", schedule=None, start_date=START_DATE, catchup=False):
    start = NoxusRunOperator(
        task_id="start", workflow_id=ECHO_WORKFLOW_ID, inputs={"text": "later"}, wait_for_completion=False
    )
    wait = NoxusRunSensor(
        task_id="wait", run_id="{{ ti.xcom_pull(task_ids='start') }}", workflow_id=ECHO_WORKFLOW_ID, **FAST
    )
    start >> wait
