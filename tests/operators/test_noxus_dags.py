"""``airflow dags test`` of one small DAG per mode (tests/dags/), against the emulator.

Each DAG runs in a subprocess with a temporary AIRFLOW_HOME (one migrated SQLite DB for the
module) and ``AIRFLOW_CONN_NOXUS_DEFAULT`` pointing at the session's emulator. ``dags test`` runs
a deferred task's trigger inline, so deferral, resume and XCom go through Airflow's real task
runner. Results are read back from the DB (read-only).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.noxus_tasks import FAST_RETRY_EXTRAS

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="module")
def airflow_env(
    tmp_path_factory: pytest.TempPathFactory, noxus_emulator_server: Any
) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW_CONN_NOXUS_DEFAULT=json.dumps(
            {
                "conn_type": "noxus",
                "host": noxus_emulator_server.url,
                "password": noxus_emulator_server.api_key,
                "extra": FAST_RETRY_EXTRAS,
            }
        ),
        NOXUS_TEST_ECHO_WORKFLOW_ID=noxus_emulator_server.control.workflow_id("echo"),
    )
    migrated = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield env


def dags_test(env: dict[str, str], dag_id: str, *, succeeds: bool = True) -> dict[str, dict[str, Any]]:
    """Run ``airflow dags test``; return ``{task_id: {"state": ..., "xcom": {key: value}}}``.

    :param succeeds: whether the DAG run must succeed (else fail).
    """
    done = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout[-4000:] + done.stderr[-4000:]
    assert (done.returncode == 0) == succeeds, output
    db = sqlite3.connect(f"file:{env['AIRFLOW_HOME']}/airflow.db?mode=ro", uri=True)
    try:
        tasks = {
            task_id: {"state": state, "xcom": {}}
            for task_id, state in db.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)
            )
        }
        for task_id, key, value in db.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = ?", (dag_id,)
        ):
            tasks[task_id]["xcom"][key] = json.loads(value)
    finally:
        db.close()
    assert tasks, output
    return tasks


def assert_succeeded_with(tasks: dict[str, dict[str, Any]], task_id: str, output: Any) -> None:
    task = tasks[task_id]
    assert task["state"] == "success", tasks
    assert task["xcom"]["return_value"] == output
    run_url = task["xcom"].get("run_url")
    if run_url is not None and AIRFLOW_V_3_0_PLUS:
        assert task["xcom"]["_link_NoxusRunLink"] == run_url


def test_deferred_dag(airflow_env: dict[str, str], noxus_emulator: Any) -> None:
    tasks = dags_test(airflow_env, "noxus_test_deferred")
    streamed = tasks["stream"]["xcom"]["return_value"]["text"]
    assert streamed.startswith("streamed 20") and "{{" not in streamed  # inputs were rendered
    assert_succeeded_with(tasks, "stream", {"text": streamed})
    assert_succeeded_with(tasks, "poll", {"text": "polled"})
    assert noxus_emulator.control.counters()["runs_created_total"] == 2


def test_blocking_dag(airflow_env: dict[str, str], noxus_emulator: Any) -> None:
    assert_succeeded_with(dags_test(airflow_env, "noxus_test_blocking"), "blocking", {"text": "blocked"})
    assert noxus_emulator.control.counters()["requests"].get("run_events") is not None


def test_sync_dag(airflow_env: dict[str, str], noxus_emulator: Any) -> None:
    assert_succeeded_with(dags_test(airflow_env, "noxus_test_sync"), "sync", {"text": "at once"})
    assert noxus_emulator.control.counters()["runs_created_total"] == 1


def test_fire_and_forget_then_sensor_dag(airflow_env: dict[str, str], noxus_emulator: Any) -> None:
    tasks = dags_test(airflow_env, "noxus_test_fire_and_forget")
    run_id = tasks["start"]["xcom"]["return_value"]
    assert tasks["start"]["xcom"]["run_id"] == run_id
    assert_succeeded_with(tasks, "wait", {"text": "later"})
    assert noxus_emulator.control.counters()["runs_created_total"] == 1
