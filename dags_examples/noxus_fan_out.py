"""Fan out one Noxus run per document with dynamic task mapping, then gather the results.

Recipe "many runs in parallel": ``NoxusRunOperator.partial(...).expand(inputs=...)`` makes one
mapped task instance per document. Each creates its run and defers, so a hundred runs wait in the
triggerer while the workers stay free; a retried task instance reattaches to the run it already
created instead of starting a duplicate. A downstream task receives every output, in order.

``document_count`` (default 100) sets the batch size; the default workflow is the emulator's
``summarize``.
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
        "workflow_id": Param("933e8b45-e429-5289-817c-91ea194ded42", type="string"),
        "document_count": Param(100, type="integer", minimum=1, maximum=1000),
    },
)
def noxus_fan_out() -> None:
    @task
    def list_documents(params: dict | None = None) -> list[dict]:
        """Stand-in for listing a bucket: one ``inputs`` dict per document."""
        count = int((params or {})["document_count"])
        return [
            {"document": f"Document {n}: minutes of meeting {n} on project {n % 7}."} for n in range(count)
        ]

    summaries = NoxusRunOperator.partial(
        task_id="summarize",
        workflow_id="{{ params.workflow_id }}",
        wait_strategy="poll",
        poll_interval=2.0,
    ).expand(inputs=list_documents())

    @task
    def gather(outputs: list[dict]) -> dict:
        lengths = [len(output["summary"]) for output in outputs]
        print(f"{len(lengths)} summaries, {sum(lengths)} characters in all")
        return {"count": len(lengths), "characters": sum(lengths)}

    gather(summaries.output)


noxus_fan_out()
