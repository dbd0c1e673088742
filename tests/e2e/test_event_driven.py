"""End-to-end: a DAG scheduled on a Noxus workflow's ended runs, in a real Airflow 3 (api-server,
scheduler, triggerer), with runs made directly on the emulator (not by Airflow) and the triggerer
SIGKILLed and replaced while runs are in flight and end.

Its own deployment on ``events_dags/`` (the watcher there polls the emulator each second, which the
other e2e modules' request counts must not see). Run alone with ``pytest -m e2e``.

The kill lands while runs are in flight and none has just ended: Airflow 3.3 commits the watcher's
state and its events in separate transactions about a second apart, and a kill inside that second
loses that poll's events (README, "Start a DAG when a Noxus run ends").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.airflow_deployment import AirflowDeployment, AirflowDeploymentError
from support.waiting import wait_until as poll_until

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="needs Airflow 3's api-server and event triggers"),
]

DAGS = Path(__file__).resolve().parent / "events_dags"
DAG_ID = "e2e_noxus_events"
#: Runs that ended before the watcher first started: history, never an event.
HISTORY: list[str] = []


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    return poll_until(condition, timeout, what, interval=0.5)


def create_run(emulator: Any, seconds: float) -> str:
    """A run made on the emulator through its API, as the Noxus app or another system would."""
    workflow_id = emulator.control.workflow_id("slow")
    request = urllib.request.Request(
        f"{emulator.url}/v1/workflows/{workflow_id}/runs",
        data=json.dumps({"input": {"seconds": seconds}}).encode(),
        headers={"X-API-Key": emulator.api_keys[0], "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["id"])


def ended(emulator: Any, run_ids: list[str]) -> bool:
    return all(emulator.control.run(run_id)["status"] == "completed" for run_id in run_ids)


@pytest.fixture(scope="module")
def airflow(emulator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    """Airflow 3 on ``events_dags/``, started after a few runs of the workflow ended (its history)."""
    HISTORY.extend(create_run(emulator, 0.2) for _ in range(3))
    wait_until(lambda: ended(emulator, HISTORY), 30, "the history runs to end")
    home = tmp_path_factory.mktemp("airflow-e2e-events")
    log_dir = (
        Path(os.environ["NOXUS_E2E_LOG_DIR"]) / "events" if os.environ.get("NOXUS_E2E_LOG_DIR") else None
    )
    env = {
        "AIRFLOW_CONN_NOXUS_DEFAULT": json.dumps(
            {"conn_type": "noxus", "host": emulator.url, "password": emulator.api_keys[0]}
        ),
        "NOXUS_E2E_EVENTS_WORKFLOW": emulator.control.workflow_id("slow"),
        "NOXUS_E2E_EVENTS_API": emulator.url,
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    }
    with AirflowDeployment(home, DAGS, env, log_dir=log_dir, parallelism=2) as deployment:
        yield deployment


def asset_events(airflow: AirflowDeployment, workflow_id: str) -> list[dict[str, Any]]:
    """The asset events of the workflow's asset, read through the REST API."""
    assets = api_get(airflow, f"/api/v2/assets?uri_pattern={workflow_id}")["assets"]
    if not assets:
        return []
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        path = f"/api/v2/assets/events?asset_id={assets[0]['id']}&limit=100&offset={offset}"
        page = api_get(airflow, path)
        found.extend(page["asset_events"])
        offset += 100
        if offset >= page["total_entries"]:
            return found


def api_get(airflow: AirflowDeployment, path: str) -> dict[str, Any]:
    """A REST read, asked again on a 500: Airflow 3.3.2 answers asset events with 500 while one of their
    DAG runs is queued (its ``created_dagruns[].start_date`` is null and fails the response model), and
    SQLite can be busy."""
    for _ in range(30):
        try:
            page: dict[str, Any] = airflow.api("GET", path)
        except AirflowDeploymentError as error:
            if "-> 500" not in str(error):
                raise
            time.sleep(1)
        else:
            return page
    raise AssertionError(f"{path} kept failing with 500")


def event_run_ids(airflow: AirflowDeployment, workflow_id: str) -> list[str]:
    return [event["extra"]["payload"]["run_id"] for event in asset_events(airflow, workflow_id)]


def stored_state(airflow: AirflowDeployment) -> str:
    """The watcher's state in the asset state store ('' while none), read from the SQLite file."""
    with sqlite3.connect(f"file:{airflow.db_path}?mode=ro", uri=True, timeout=10) as db:
        rows = db.execute("SELECT value FROM asset_state_store WHERE key = 'noxus_run_events'").fetchall()
    return rows[0][0] if rows else ""


def test_runs_made_outside_airflow_make_one_event_each_across_a_sigkilled_triggerer(
    airflow: AirflowDeployment, emulator: Any, secret_keys: tuple[str, ...]
) -> None:
    workflow_id = emulator.control.workflow_id("slow")
    airflow.wait_for_dags([DAG_ID])
    wait_until(lambda: stored_state(airflow), 120, "the watcher to start and store its place")

    before_kill = [create_run(emulator, 0.3) for _ in range(3)]
    wait_until(lambda: len(event_run_ids(airflow, workflow_id)) >= 3, 60, "3 asset events")

    in_flight = [create_run(emulator, 12) for _ in range(2)]
    wait_until(lambda: all(run in stored_state(airflow) for run in in_flight), 30, "the runs seen in flight")
    airflow.kill_component("triggerer", signal.SIGKILL)
    while_dead = [create_run(emulator, 0.3) for _ in range(3)]
    wait_until(lambda: ended(emulator, while_dead), 30, "the runs made while no triggerer runs")
    airflow.start_component("triggerer")
    after = [create_run(emulator, 0.3) for _ in range(2)]

    expected = [*before_kill, *in_flight, *while_dead, *after]
    wait_until(lambda: len(event_run_ids(airflow, workflow_id)) >= len(expected), 150, "every run's event")
    time.sleep(8)  # several more polls: nothing repeated, nothing from history
    told = event_run_ids(airflow, workflow_id)
    assert sorted(told) == sorted(expected), {"history": HISTORY, "told": told}
    assert not set(told) & set(HISTORY)
    for event in asset_events(airflow, workflow_id):
        payload = event["extra"]["payload"]
        assert event["extra"]["from_trigger"] is True
        assert (payload["workflow_id"], payload["status"]) == (workflow_id, "completed")
        assert payload["run_url"].endswith(payload["run_id"]) and payload["finished_at"]

    # The consumer DAG ran on the events and read every run's output with the hook. Airflow queues one
    # DAG run per asset at a time: events that land while the scheduler creates a DAG run for earlier
    # ones wait for the next event (the queue row is kept, not renewed). A closing run brings them in.
    closers: list[str] = []
    for _ in range(6):
        closers.append(create_run(emulator, 0.1))
        with contextlib.suppress(pytest.fail.Exception):
            wait_until(
                lambda: set(expected) <= set(consumed(airflow)), 20, "the consumer DAG to read every run"
            )
            break
    outputs = consumed(airflow)
    assert set(expected) <= set(outputs) <= set(expected) | set(closers)
    assert all(output == {"slept": 12 if run in in_flight else 0.3} for run, output in outputs.items()
               if run in expected)  # fmt: skip
    assert sorted(event_run_ids(airflow, workflow_id)) == sorted([*expected, *closers])
    assert all(key not in stored_state(airflow) for key in secret_keys)
    logs = [path.read_text(errors="replace") for path in airflow.log_dir.rglob("*.log")]
    assert any("Watching Noxus workflow" in text for text in logs), "the triggerer's logs were not read"
    assert not [key for key in secret_keys for text in logs if key in text]


def consumed(airflow: AirflowDeployment) -> dict[str, Any]:
    """``{run_id: output}`` read by the finished consumer DAG runs; each read exactly the runs of the
    asset events Airflow gave it."""
    outputs: dict[str, Any] = {}
    for run in api_get(airflow, f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]:
        if run["state"] != "success":
            assert run["state"] in ("queued", "running"), run
            continue
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents"
        given = {event["extra"]["payload"]["run_id"] for event in api_get(airflow, path)["asset_events"]}
        read = {}
        for entry in airflow.xcom_entries(DAG_ID, run["dag_run_id"], "read_runs"):
            assert entry["key"] == "return_value"
            read.update(entry["value"])
        assert set(read) == given, run["dag_run_id"]
        outputs.update(read)
    return outputs
