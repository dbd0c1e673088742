"""TaskFlow: ``@task.noxus`` mapped over questions, one with ``output_model``, and tasks reading them."""

from __future__ import annotations

from datetime import timedelta

from _noxus_test_common import DAG, ECHO_WORKFLOW_ID, FAST, START_DATE
from pydantic import BaseModel

try:
    from airflow.sdk import task
except ImportError:  # Airflow 2.11
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]

#: Short, so that a retry (there must be none) would happen within the test.
RETRY_DELAY = timedelta(seconds=1)
QUESTIONS = ["Why is the sky blue?", "How far is the moon?", "What is 6 x 7?"]


class Echoed(BaseModel):
    """The echo workflow's output; ``checked`` is not in it, so its presence proves validation."""

    text: str
    checked: bool = True


class Numeric(BaseModel):
    text: int


with DAG(dag_id="noxus_test_taskflow", schedule=None, start_date=START_DATE, catchup=False):

    @task
    def questions() -> list[str]:
        return QUESTIONS

    @task.noxus(workflow_id=ECHO_WORKFLOW_ID, **FAST)
    def ask(question: str, prefix: str, ds: str | None = None) -> dict[str, str]:
        return {"text": f"{prefix}{question} ({ds})"}

    @task
    def gather(answers: list[dict]) -> list[str]:
        return [answer["text"] for answer in answers]

    @task.noxus(workflow_id=ECHO_WORKFLOW_ID, output_model=Echoed, **FAST)
    def first_upper(texts: list[str]) -> dict[str, str]:
        return {"text": texts[0].upper()}

    @task
    def read_typed(answer: dict) -> str:
        return f"{answer['text']} checked={answer['checked']}"

    texts = gather(ask.partial(prefix="Q: ").expand(question=questions()))
    read_typed(first_upper(texts))
    ask.override(task_id="ask_templated", deferrable=False)("dated {{ ds }}", prefix="")


with DAG(dag_id="noxus_test_taskflow_misfit", schedule=None, start_date=START_DATE, catchup=False):

    @task.noxus(
        workflow_id=ECHO_WORKFLOW_ID, output_model=Numeric, retries=3, retry_delay=RETRY_DELAY, **FAST
    )
    def misfit() -> dict[str, str]:
        return {"text": "not a number"}

    @task
    def after(answer: dict) -> None:
        raise AssertionError("never runs: its upstream failed")

    after(misfit())
