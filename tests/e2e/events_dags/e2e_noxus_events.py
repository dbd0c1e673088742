"""e2e: a DAG scheduled on the ended runs of one Noxus workflow (NoxusRunEventTrigger in an AssetWatcher).

The workflow and the API come from the environment the test gives Airflow; the watcher polls each
second. The consumer reads every run's output with the hook and returns ``{run_id: output}``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_provider_noxus.assets import workflow_asset_uri
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.events import NoxusRunEventTrigger

WORKFLOW_ID = os.environ.get("NOXUS_E2E_EVENTS_WORKFLOW", "unset")

ended_runs = Asset(
    name="noxus_e2e_ended_runs",
    uri=workflow_asset_uri(os.environ.get("NOXUS_E2E_EVENTS_API", "http://127.0.0.1"), WORKFLOW_ID),
    watchers=[
        AssetWatcher(
            name="noxus_e2e_watcher",
            trigger=NoxusRunEventTrigger(workflow_id=WORKFLOW_ID, poll_interval=1.0),
        )
    ],
)


@dag(schedule=[ended_runs], start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1)
def e2e_noxus_events() -> None:
    @task(multiple_outputs=False)
    def read_runs(triggering_asset_events: Any = None) -> dict[str, Any]:
        hook = NoxusHook()
        return {
            event.extra["payload"]["run_id"]: hook.get_run(WORKFLOW_ID, event.extra["payload"]["run_id"])[
                "output"
            ]
            for event in triggering_asset_events[ended_runs]
        }

    read_runs()


e2e_noxus_events()
