"""Start a Noxus run, then follow its event stream from the triggerer; progress shows in the task log.

Recipe "stream a run's events": with ``wait_strategy="stream"`` the trigger reads
``GET /v1/runs/{run_id}/events`` (Server-Sent Events) and logs each node as it starts, streams and
ends, so the task's log tells the story of the run. A dropped stream is resumed where it stopped;
if streaming keeps failing the trigger falls back to polling.

The default workflow is the emulator's ``summarize`` workflow, whose LLM node streams its text.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.operators.noxus import NoxusRunOperator

DOCUMENT = (
    "Airflow schedules and monitors workflows. Deferrable operators free their worker slot while "
    "they wait, handing the wait to the triggerer, an asyncio process that watches many waits at once."
)


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["noxus", "example"],
    doc_md=__doc__,
    # Retries absorb transient failures; a retried Noxus task reattaches to the run it started.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    params={
        "workflow_id": Param("933e8b45-e429-5289-817c-91ea194ded42", type="string"),
        "document": Param(DOCUMENT, type="string"),
    },
)
def noxus_deferred_stream() -> None:
    summarize = NoxusRunOperator(
        task_id="summarize",
        workflow_id="{{ params.workflow_id }}",
        inputs={"document": "{{ params.document }}"},
        wait_strategy="stream",
    )

    @task
    def publish(output: dict) -> int:
        print(f"Summary: {output['summary']}")
        return len(output["summary"])

    publish(summarize.output)


noxus_deferred_stream()
