"""Start a DAG when a Noxus run ends, wherever the run was started (Airflow 3).

Recipe "event-driven": runs of a workflow are made outside Airflow (the Noxus app, Noxus's own
triggers, another system calling the API). ``NoxusRunEventTrigger`` in an ``AssetWatcher`` watches the
workflow from the triggerer, without a sensor holding a worker slot, and fires one asset event per run
that ends ``completed`` after the watcher first started. This DAG is scheduled on that asset: each DAG
run gets the events that arrived since the last one, reads every run's output with the hook, and loads
it (here: prints it). Runs that ended before the watcher started are history and make no event; on
Airflow 3.3 the watcher keeps its place in the asset state store, so a restarted or replaced triggerer
neither repeats nor skips a run.

Set ``NOXUS_API_URL`` (the connection's base URL, which names the asset) and ``NOXUS_WORKFLOW_ID``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_provider_noxus.assets import workflow_asset_uri
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.events import NoxusRunEventTrigger

NOXUS_API_URL = os.environ.get("NOXUS_API_URL", "https://backend.noxus.ai")
WORKFLOW_ID = os.environ.get("NOXUS_WORKFLOW_ID", "20d13e9e-99b6-55bf-8486-86c046686c59")

#: The workflow's completed runs: ``noxus://<api host>/workflows/<workflow_id>``.
completed_runs = Asset(
    name="noxus_completed_runs",
    uri=workflow_asset_uri(NOXUS_API_URL, WORKFLOW_ID),
    watchers=[
        AssetWatcher(
            name="noxus_completed_runs_watcher",
            trigger=NoxusRunEventTrigger(workflow_id=WORKFLOW_ID, statuses=("completed",), poll_interval=30),
        )
    ],
)


@dag(schedule=[completed_runs], start_date=datetime(2026, 1, 1), catchup=False, tags=["noxus", "example"],
     doc_md=__doc__)  # fmt: skip
def noxus_event_driven() -> None:
    @task(multiple_outputs=False)
    def load_outputs(triggering_asset_events: Any = None) -> dict[str, Any]:
        """Read the output of each run that ended (the event carries ids and a link, not the output)."""
        hook = NoxusHook()
        outputs = {}
        for event in triggering_asset_events[completed_runs]:
            run = event.extra["payload"]
            outputs[run["run_id"]] = hook.get_run(run["workflow_id"], run["run_id"]).get("output")
            print(
                f"Noxus run {run['run_id']} ended {run['status']} at {run['finished_at']}: {run['run_url']}"
            )
        return outputs

    load_outputs()


noxus_event_driven()
