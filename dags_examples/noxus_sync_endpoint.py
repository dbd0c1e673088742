"""Run a short Noxus workflow through the synchronous endpoint and use its output downstream.

Recipe "create a run and wait for it in one request": ``use_sync_endpoint=True`` sends
``POST /v1/workflows/{id}/runs/sync``, which holds the request until the run ends (at most 120 s).
The worker slot stays busy meanwhile, so keep this for flows that finish in seconds. If the server
gives up before the run ends, the operator carries on waiting for that same run (deferred).

The workflow id is a DAG param; its default is the emulator's ``echo`` workflow. To run against
Noxus, point the ``noxus_default`` connection at it and trigger with your own workflow id.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.operators.noxus import NoxusRunOperator


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["noxus", "example"],
    doc_md=__doc__,
    # Retries absorb transient failures; a retried Noxus task reattaches to the run it started.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    params={
        "workflow_id": Param("54a9e326-1ef6-5ba2-9955-2afb8dd09a11", type="string"),
        "text": Param("Hello from Airflow", type="string"),
    },
)
def noxus_sync_endpoint() -> None:
    echo = NoxusRunOperator(
        task_id="echo",
        workflow_id="{{ params.workflow_id }}",
        inputs={"text": "{{ params.text }}"},
        use_sync_endpoint=True,
    )

    @task
    def report(output: dict) -> str:
        """Outputs are keyed by the output nodes' labels."""
        print(f"The workflow answered: {output['text']!r}")
        return str(output["text"])

    report(echo.output)


noxus_sync_endpoint()
