"""Wait on the worker (deferrable=False)."""

from __future__ import annotations

from _noxus_test_common import DAG, ECHO_WORKFLOW_ID, FAST, START_DATE

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

with DAG(dag_id="noxus_test_blocking", schedule=None, start_date=START_DATE, catchup=False):
    NoxusRunOperator(
        task_id="blocking", workflow_id=ECHO_WORKFLOW_ID, inputs={"text": "blocked"}, deferrable=False, **FAST
    )
