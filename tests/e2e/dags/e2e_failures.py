"""E2E: single Noxus runs that end badly, one DAG per case (no retries, so each case is seen once).

- ``e2e_mark_failed``: a long run; the test marks the deferred task failed through the REST API.
- ``e2e_execution_timeout``: a run longer than the task's ``execution_timeout``.
- ``e2e_lost_create``: the task process is SIGKILLed while the server holds its create's answer; the
  retry must find that run instead of creating a second one.
- ``e2e_wrong_key``: a connection whose API key the server refuses (retries on, to show none is spent).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

#: dag_id -> the one NoxusRunOperator's arguments (all run the emulator's ``slow`` workflow).
CASES: dict[str, dict[str, Any]] = {
    "e2e_mark_failed": {
        "task_id": "long_run",
        "inputs": {"seconds": 300},
        "wait_strategy": "poll",
        "poll_interval": 1.0,
        "retries": 0,
    },
    "e2e_execution_timeout": {
        "task_id": "too_long_run",
        "inputs": {"seconds": 300},
        "wait_strategy": "stream",
        "execution_timeout": timedelta(seconds=10),
        "retries": 0,
    },
    "e2e_lost_create": {
        "task_id": "lost_answer",
        "inputs": {"seconds": 8},
        "wait_strategy": "poll",
        "poll_interval": 1.0,
        "retries": 1,
        "retry_delay": timedelta(seconds=2),
    },
    "e2e_wrong_key": {
        "task_id": "refused",
        "inputs": {"seconds": 1},
        "noxus_conn_id": "noxus_wrong_key",
        "retries": 2,
        "retry_delay": timedelta(seconds=1),
    },
}

for dag_id, operator_kwargs in CASES.items():
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        NoxusRunOperator(workflow_id="{{ var.value.noxus_e2e_slow_workflow }}", **operator_kwargs)
