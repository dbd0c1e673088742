"""Run Noxus workflows from TaskFlow with ``@task.noxus``: inputs computed from upstream data, outputs typed.

Recipe "a run per item, typed": the decorated function returns the run's inputs (a dict); the task
returns the run's output. ``ask.expand(question=...)`` makes one mapped task instance, and one Noxus run,
per question; each defers while its run goes on. ``output_model=`` validates the output against a
pydantic model when the run completes: the task returns the validated model as JSON data, and an output
that does not fit fails the task at once, naming the fields, the run and its link.

Every ``NoxusRunOperator`` argument works in ``@task.noxus(...)`` (``deferrable``, ``wait_strategy``,
``timeout``, ``use_sync_endpoint``...). The default workflow is the emulator's ``echo`` workflow, which
returns its ``text`` input as its ``text`` output.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from pydantic import BaseModel


class Answer(BaseModel):
    """What the workflow returns, keyed by output-node label."""

    text: str


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
        "questions": Param(["What is Airflow?", "What is a deferrable operator?"], type="array"),
    },
)
def noxus_taskflow() -> None:
    @task
    def list_questions(params: dict | None = None) -> list[str]:
        return list((params or {})["questions"])

    # Each mapped instance calls ask() with its question, runs the workflow, returns the run's output.
    @task.noxus(workflow_id="{{ params.workflow_id }}", output_model=Answer, wait_strategy="poll")
    def ask(question: str) -> dict:
        return {"text": question.strip()}

    @task
    def report(answers: list[dict]) -> int:
        for answer in answers:
            print(f"Answer: {answer['text']}")
        return len(answers)

    report(ask.expand(question=list_questions()))


noxus_taskflow()
