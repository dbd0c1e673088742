"""E2E: ``@task.noxus`` mapped over questions (each answer validated by a pydantic ``output_model``) and
read downstream; and a task whose output does not fit its model, which must fail once, without retries.

Conf: ``workflow_id`` (the emulator's ``echo`` workflow) and ``questions``. Retries absorb Airflow 3.3.2's
spurious failures of concurrently deferred tasks; a retry must reattach to its run, never make another.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from pydantic import BaseModel

DEFAULTS = {"retries": 3, "retry_delay": timedelta(seconds=2)}


class Answer(BaseModel):
    """The echo workflow's output; ``reviewed`` is not in it, so it proves the output was validated."""

    text: str
    reviewed: bool = False


class Numeric(BaseModel):
    text: int


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, default_args=DEFAULTS)
def e2e_taskflow() -> None:
    @task
    def questions(params: dict | None = None) -> list[str]:
        return list((params or {})["questions"])

    @task.noxus(workflow_id="{{ params.workflow_id }}", output_model=Answer, poll_interval=1.0)
    def ask(question: str) -> dict:
        return {"text": f"answer to {question}"}

    @task
    def gather(answers: list[dict]) -> list[dict]:
        return list(answers)

    gather(ask.expand(question=questions()))


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, default_args=DEFAULTS)
def e2e_taskflow_misfit() -> None:
    @task.noxus(workflow_id="{{ params.workflow_id }}", output_model=Numeric, poll_interval=1.0)
    def misfit() -> dict:
        return {"text": "forty-two"}

    @task
    def after(answer: dict) -> None:
        raise AssertionError("never runs: its upstream failed")

    after(misfit())


e2e_taskflow()
e2e_taskflow_misfit()
