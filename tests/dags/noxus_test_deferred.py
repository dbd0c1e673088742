"""Deferred wait (the default): one task streams, one polls; both return the run's output."""

from __future__ import annotations

from _noxus_test_common import DAG, ECHO_WORKFLOW_ID, FAST, START_DATE

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

with DAG(dag_id="noxus_test_deferred", schedule=None, start_date=START_DATE, catchup=False):
    NoxusRunOperator(
        task_id="stream", workflow_id=ECHO_WORKFLOW_ID, inputs={"text": "streamed {{ ds }}"},
        wait_strategy="stream", **FAST,
    )  # fmt: skip
    NoxusRunOperator(
        task_id="poll", workflow_id=ECHO_WORKFLOW_ID, inputs={"text": "polled"}, wait_strategy="poll", **FAST
    )
