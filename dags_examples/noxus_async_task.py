"""Drive several Noxus runs concurrently from one async ``@task`` with the provider's async client.

Recipe "async/await": Airflow 3.2+ runs a task whose function is ``async def`` in an event loop on
the worker. ``NoxusHook(...).async_client()`` gives an aiohttp-based client that shares one connection
pool, so the task can start a batch of runs and follow their event streams at the same time, then
read each output. Use this when a task needs the runs' results together and the batch is small;
for many independent runs prefer the fan-out example (deferred, one task per run).

Airflow 2.x has no async tasks: there, call the blocking ``NoxusHook`` methods from a plain task.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from airflow_provider_noxus.hooks.noxus import NoxusAsyncClient, NoxusHook
from airflow_provider_noxus.protocol import NoxusRunStatus

HEADLINES = [
    "Local library extends opening hours for the exam season.",
    "City council approves a new cycling lane along the river.",
    "Researchers publish an open dataset of alpine weather records.",
]


async def run_to_completion(client: NoxusAsyncClient, workflow_id: str, document: str) -> dict:
    """Create one run, follow its events until it ends, and return the finished run with its output."""
    run = await client.a_create_run(workflow_id, {"document": document})
    last_event_id: str | None = None
    while True:
        async for event in client.a_iter_run_events(run["id"], last_event_id=last_event_id):
            last_event_id = event.event_id or last_event_id
        # The stream ends after the run's final frame, or early if the connection dropped: check.
        run = await client.a_get_run(workflow_id, run["id"])
        status = NoxusRunStatus.parse(run["status"])
        if status is not None and status.is_terminal:
            break
    if status is not NoxusRunStatus.COMPLETED:
        raise RuntimeError(f"Noxus run {run['id']} of workflow {workflow_id} ended {run['status']}.")
    return run


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["noxus", "example"],
    doc_md=__doc__,
    # Retries absorb transient failures; a retried Noxus task reattaches to the run it started.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5)},
    params={"workflow_id": Param("933e8b45-e429-5289-817c-91ea194ded42", type="string")},
)
def noxus_async_task() -> None:
    @task
    async def summarize_headlines(params: dict | None = None) -> list[str]:
        workflow_id = (params or {})["workflow_id"]
        async with NoxusHook("noxus_default").async_client() as client:
            runs = await asyncio.gather(
                *(run_to_completion(client, workflow_id, headline) for headline in HEADLINES)
            )
        summaries = [run["output"]["summary"] for run in runs]
        for headline, summary in zip(HEADLINES, summaries, strict=True):
            print(f"{headline} -> {summary[:60]}...")
        return summaries

    summarize_headlines()


noxus_async_task()
