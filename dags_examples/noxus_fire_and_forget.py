"""Start a Noxus run without waiting (Noxus calls a webhook when it ends), then wait in a sensor.

Recipe "fire-and-forget with a callback": ``wait_for_completion=False`` makes the operator return as
soon as the run is created, with the run id as its result; ``callback_url`` asks Noxus to POST the
finished run to your endpoint (treat that call as a wake-up: it is not signed). Anything that needs
the result in Airflow waits with ``NoxusRunSensor``, deferred, and gets the run's output.
Tasks in between run while the Noxus run goes on.

Set ``callback_url`` to an endpoint of yours; the demo serves one on loopback. With an empty
``callback_url`` no webhook is requested.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["noxus", "example"],
    doc_md=__doc__,
    # Retries absorb transient failures; a retried Noxus task reattaches to the run it started.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    params={
        "workflow_id": Param("20d13e9e-99b6-55bf-8486-86c046686c59", type="string"),
        "callback_url": Param("", type="string"),
    },
)
def noxus_fire_and_forget() -> None:
    start = NoxusRunOperator(
        task_id="start_review",
        workflow_id="{{ params.workflow_id }}",
        inputs={"text": "Please approve the release notes for version 2.0."},
        callback_url="{{ params.callback_url }}",
        wait_for_completion=False,
    )

    @task
    def meanwhile(noxus_run_id: str) -> None:
        print(f"Noxus run {noxus_run_id} is going on; other work happens here.")

    wait = NoxusRunSensor(
        task_id="wait_for_review",
        workflow_id="{{ params.workflow_id }}",
        run_id="{{ ti.xcom_pull(task_ids='start_review') }}",
        poll_interval=1.0,
        timeout=600,
    )

    @task
    def act_on(output: dict) -> bool:
        print(f"Review finished: approved={output['approved']}")
        return bool(output["approved"])

    meanwhile(start.output) >> wait
    act_on(wait.output)


noxus_fire_and_forget()
