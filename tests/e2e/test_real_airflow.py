"""End-to-end: the provider in a real multi-process Airflow 3 (api-server, scheduler, triggerer) on loopback.

One deployment for the module (see ``conftest.py``); the tests run in file order and each starts its own
DAG runs. Run alone with ``pytest -m e2e``. The figures (worker seconds per task) are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import statistics
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from support.waiting import wait_until as poll_until

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_noxus.hooks.noxus import NoxusHook

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="needs Airflow 3's api-server and task SDK"),
]

DEFERRED_MARK = "Pausing task as DEFERRED."
ATTEMPT_LOG = re.compile(r"attempt=\d+\.log$")
#: Worker seconds per task, filled by the tests and printed at the end of the module.
WORKER_SECONDS: dict[str, list[float]] = {}


# ----------------------------------------------------------------------------------------- helpers


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll once a second: the components read here are slow to change."""
    return poll_until(condition, timeout, what, interval=1.0)


def attempt_logs(airflow: Any, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[Path]:
    """The task-side log files (one per try) of one task instance, trigger logs left out."""
    folder = airflow.task_log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    return sorted(path for path in folder.glob("attempt=*") if ATTEMPT_LOG.search(path.name))


def log_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The JSON lines of task log files."""
    records = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def worker_seconds(paths: Iterable[Path]) -> float:
    """Time a task spent on a worker, deferral excluded.

    Each time the task runner starts (first start, resume after deferral, retry) it logs
    ``::group::Pre Execute``; a segment runs from there to the last line before the next start.
    """
    total = 0.0
    for path in paths:
        segment: list[datetime] = []
        for record in log_records([path]):
            stamp = datetime.fromisoformat(str(record.get("timestamp", "")).replace("Z", "+00:00"))
            if record.get("event") == "::group::Pre Execute" and segment:
                total += (segment[-1] - segment[0]).total_seconds()
                segment = []
            segment.append(stamp)
        if segment:
            total += (segment[-1] - segment[0]).total_seconds()
    return total


def went_through_deferred(paths: Iterable[Path]) -> bool:
    return any(record.get("event", "").strip() == DEFERRED_MARK.strip() for record in log_records(paths))


def runs_created(emulator: Any, workflow_id: str) -> int:
    return int(emulator.control.counters()["runs_created"].get(workflow_id, 0))


def mapped_states(airflow: Any, dag_id: str, run_id: str, task_id: str) -> dict[int, str | None]:
    return {
        ti["map_index"]: ti["state"]
        for ti in airflow.task_instances(dag_id, run_id)
        if ti["task_id"] == task_id and ti["map_index"] >= 0
    }


def task_instance(airflow: Any, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    return next(ti for ti in airflow.task_instances(dag_id, run_id) if ti["task_id"] == task_id)


def noxus_run_id(airflow: Any, dag_id: str, run_id: str, task_id: str) -> str:
    """The Noxus run id the operator pushed to XCom before deferring."""
    entries = airflow.xcom_entries(dag_id, run_id, task_id)
    return str(next(entry["value"] for entry in entries if entry["key"] == "run_id"))


def failure_text(airflow: Any, dag_id: str, run_id: str, task_id: str) -> str:
    """Error lines of the task's logs, its trigger's included (a task that ends in the triggerer logs
    its error there): what a user reads to learn why it failed."""
    folder = airflow.task_log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    records = log_records(sorted(folder.glob("attempt=*")))
    lines = [
        f"{record.get('event', '')} {record.get('error_detail', '')}"
        for record in records
        if record.get("level") in ("error", "critical")
    ]
    return "\n".join(lines)


def record_worker_seconds(
    label: str, airflow: Any, dag_id: str, run_id: str, task_id: str, count: int
) -> None:
    WORKER_SECONDS[label] = [
        worker_seconds(attempt_logs(airflow, dag_id, run_id, task_id, index)) for index in range(count)
    ]


# ----------------------------------------------------------------------------------------- scenarios


def test_fan_out_of_50_deferred_runs_creates_exactly_50(airflow: Any, emulator: Any) -> None:
    slow = emulator.control.workflow_id("slow")
    created_before = runs_created(emulator, slow)
    stops_before = emulator.control.counters()["stops_total"]

    run_id = airflow.trigger_dag("e2e_fan_out", {"count": 50, "seconds": 5})
    state = airflow.wait_for_dag_run("e2e_fan_out", run_id, timeout=240)

    states = mapped_states(airflow, "e2e_fan_out", run_id, "wait_for_run")
    assert state == "success", states
    assert sorted(states) == list(range(50))
    assert set(states.values()) == {"success"}
    not_deferred = [
        index
        for index in range(50)
        if not went_through_deferred(attempt_logs(airflow, "e2e_fan_out", run_id, "wait_for_run", index))
    ]
    assert not_deferred == [], f"mapped task instances that never deferred: {not_deferred}"
    # The outputs the triggerer pushed reach the downstream task as the runs returned them.
    (kinds,) = [
        entry["value"]
        for entry in airflow.xcom_entries("e2e_fan_out", run_id, "gather")
        if entry["key"] == "return_value"
    ]
    assert kinds == {"dict": 50}
    # The "Noxus run" button of a task that ended in the triggerer: the link stored when it deferred.
    task_path = f"/api/v2/dags/e2e_fan_out/dagRuns/{quote(run_id, safe='')}/taskInstances/wait_for_run"
    for index in (0, 49):
        links = airflow.api("GET", f"{task_path}/links?map_index={index}")["extra_links"]
        url = airflow.api("GET", f"{task_path}/xcomEntries/run_url?map_index={index}&stringify=false")
        assert isinstance(url["value"], str) and url["value"], url
        assert links == {"Noxus run": url["value"]}
    # Retried task instances (3.3.2's spurious failures) reattached instead of creating a run again.
    assert runs_created(emulator, slow) - created_before == 50
    assert emulator.control.counters()["stops_total"] == stops_before
    retried = sum(
        1
        for index in range(50)
        if len(attempt_logs(airflow, "e2e_fan_out", run_id, "wait_for_run", index)) > 1
    )
    record_worker_seconds(
        f"fan-out, 5 s runs ({retried} of 50 retried)", airflow, "e2e_fan_out", run_id, "wait_for_run", 50
    )


def test_triggerer_sigkill_while_deferred_loses_and_duplicates_nothing(
    airflow: Any, emulator: Any, secret_keys: tuple[str, ...]
) -> None:
    slow = emulator.control.workflow_id("slow")
    created_before = runs_created(emulator, slow)
    run_id = airflow.trigger_dag("e2e_fan_out", {"count": 6, "seconds": 25})

    def all_deferred_in_triggerer() -> bool:
        tis = [
            ti
            for ti in airflow.task_instances("e2e_fan_out", run_id)
            if ti["task_id"] == "wait_for_run" and ti["map_index"] >= 0
        ]
        return len(tis) == 6 and all(ti["state"] == "deferred" and ti["triggerer_job"] for ti in tis)

    wait_until(all_deferred_in_triggerer, 120, "6 task instances deferred and picked up by the triggerer")
    # While the triggers exist: their serialized kwargs carry the run, never the key.
    kwargs = trigger_kwargs(airflow.db_path)
    assert kwargs, "no trigger rows to inspect"
    assert all(key not in text for text in kwargs for key in secret_keys)
    assert any(slow in text for text in kwargs), "trigger kwargs unreadable: the scan would prove nothing"

    airflow.kill_component("triggerer", signal.SIGKILL)
    airflow.start_component("triggerer")
    state = airflow.wait_for_dag_run("e2e_fan_out", run_id, timeout=180)

    assert state == "success", mapped_states(airflow, "e2e_fan_out", run_id, "wait_for_run")
    assert runs_created(emulator, slow) - created_before == 6
    record_worker_seconds(
        "after triggerer SIGKILL, 25 s runs", airflow, "e2e_fan_out", run_id, "wait_for_run", 6
    )


def test_clearing_succeeded_mapped_tasks_runs_them_again_and_nothing_else(
    airflow: Any, emulator: Any
) -> None:
    slow = emulator.control.workflow_id("slow")
    run_id = airflow.trigger_dag("e2e_fan_out", {"count": 4, "seconds": 2})
    assert airflow.wait_for_dag_run("e2e_fan_out", run_id, timeout=180) == "success"
    first_runs = xcom_run_ids(airflow, "e2e_fan_out", run_id, "wait_for_run")
    created_before = runs_created(emulator, slow)

    airflow.clear_task_instances("e2e_fan_out", run_id, [["wait_for_run", 1], ["wait_for_run", 3]])
    assert airflow.wait_for_dag_run("e2e_fan_out", run_id, timeout=180) == "success"

    # A clear is a request to run again: one new Noxus run per cleared task instance, none for the
    # others (the run id each succeeded with is history, not something to reattach to).
    assert runs_created(emulator, slow) - created_before == 2
    again = xcom_run_ids(airflow, "e2e_fan_out", run_id, "wait_for_run")
    assert again[0] == first_runs[0] and again[2] == first_runs[2]
    assert again[1] != first_runs[1] and again[3] != first_runs[3]


def xcom_run_ids(airflow: Any, dag_id: str, run_id: str, task_id: str) -> dict[int, str]:
    """``{map_index: the Noxus run id it pushed}``."""
    entries = airflow.xcom_entries(dag_id, run_id, task_id)
    return {int(entry["map_index"]): str(entry["value"]) for entry in entries if entry["key"] == "run_id"}


def test_a_task_killed_while_its_create_answer_is_held_gets_that_run_on_retry(
    airflow: Any, emulator: Any
) -> None:
    import psutil

    slow = emulator.control.workflow_id("slow")
    created_before = runs_created(emulator, slow)
    # The server makes the run, then holds the answer 20 s: the task process is killed meanwhile.
    emulator.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=20)
    run_id = airflow.trigger_dag("e2e_lost_create")
    wait_until(lambda: runs_created(emulator, slow) > created_before, 120, "the run to be created")
    port = int(emulator.url.rsplit(":", 1)[1])

    def task_process() -> psutil.Process | None:
        for connection in psutil.net_connections(kind="tcp"):
            to_emulator = connection.raddr and connection.raddr.port == port
            if to_emulator and connection.pid not in (None, os.getpid()):
                return psutil.Process(connection.pid)
        return None

    process = wait_until(task_process, 20, "the task process holding the create request")
    process.kill()  # SIGKILL: no on_kill, no answer, nothing but the record in task_state_store

    assert airflow.wait_for_dag_run("e2e_lost_create", run_id, timeout=180) == "success"
    ti = task_instance(airflow, "e2e_lost_create", run_id, "lost_answer")
    assert ti["try_number"] == 2, "the retry, not the killed try, delivered the output"
    assert runs_created(emulator, slow) - created_before == 1
    assert emulator.control.counters()["stops_total"] == 0


def trigger_kwargs(db_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return [str(row[0]) for row in conn.execute("SELECT kwargs FROM trigger")]


def test_a_sensor_started_in_the_triggerer_ends_there_with_its_output_and_link(
    airflow: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker runs it: the trigger pushes the output, the run's id and URL, and the "Noxus run" link
    Airflow would otherwise store on the worker."""
    connection = {"conn_type": "noxus", "host": emulator.url, "password": emulator.api_keys[0]}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))
    workflow_id = emulator.control.workflow_id("echo")
    run = NoxusHook().create_run(workflow_id, {"text": "from elsewhere"})  # a run made outside Airflow
    dag_id = "e2e_sensor_from_triggerer"
    run_id = airflow.trigger_dag(dag_id, {"workflow_id": workflow_id, "run_id": run["id"]})
    assert airflow.wait_for_dag_run(dag_id, run_id, timeout=120) == "success"
    assert attempt_logs(airflow, dag_id, run_id, "wait_for_run") == [], "a worker ran the sensor"
    # What a downstream task pulled (Airflow keeps a trigger's XComs in another encoding than a
    # worker's: read them as tasks do).
    (read_back,) = [
        entry["value"]
        for entry in airflow.xcom_entries(dag_id, run_id, "read_back")
        if entry["key"] == "return_value"
    ]
    run_url = NoxusHook().run_url(workflow_id, run["id"])
    assert read_back == {"output": {"text": "from elsewhere"}, "run_id": run["id"], "run_url": run_url}
    task_path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/wait_for_run"
    assert airflow.api("GET", f"{task_path}/links")["extra_links"] == {"Noxus run": run_url}


def test_marking_a_deferred_task_failed_stops_its_run(airflow: Any, emulator: Any) -> None:
    def status_reads() -> int:
        """Status reads of any kind: the shared watcher's list pages and per-run reads."""
        requests = emulator.control.counters()["requests"]
        return sum(sum(requests.get(endpoint, {}).values()) for endpoint in ("list_runs", "get_run_status"))

    reads_before = status_reads()
    run_id = airflow.trigger_dag("e2e_mark_failed")
    wait_until(
        lambda: task_instance(airflow, "e2e_mark_failed", run_id, "long_run")["state"] == "deferred",
        120,
        "the task to defer",
    )
    noxus_run = noxus_run_id(airflow, "e2e_mark_failed", run_id, "long_run")
    # Airflow calls a trigger's on_kill only once a triggerer runs it: a task marked failed in the
    # second between its deferral and the triggerer's pick-up leaves its run going (README, "Kill").
    # The trigger's log file says a triggerer runs it (a status read alone may be a previous test's
    # watcher reading once more), and its first status read says it is past its start.
    task_logs = airflow.task_log_dir / "dag_id=e2e_mark_failed" / f"run_id={run_id}" / "task_id=long_run"
    wait_until(lambda: list(task_logs.glob("attempt=*.trigger.*")), 60, "a triggerer to run the trigger")
    wait_until(lambda: status_reads() > reads_before, 60, "the trigger's first status read")

    airflow.set_task_instance_state("e2e_mark_failed", run_id, "long_run", "failed")

    wait_until(lambda: emulator.control.counters()["stops"].get(noxus_run), 60, f"a stop of run {noxus_run}")
    assert emulator.control.run(noxus_run)["status"] == "stopped"
    assert task_instance(airflow, "e2e_mark_failed", run_id, "long_run")["state"] == "failed"


def test_execution_timeout_stops_the_run_and_fails_clearly(airflow: Any, emulator: Any) -> None:
    run_id = airflow.trigger_dag("e2e_execution_timeout")
    state = airflow.wait_for_dag_run("e2e_execution_timeout", run_id, timeout=120)

    assert state == "failed"
    assert task_instance(airflow, "e2e_execution_timeout", run_id, "too_long_run")["state"] == "failed"
    noxus_run = noxus_run_id(airflow, "e2e_execution_timeout", run_id, "too_long_run")
    wait_until(lambda: emulator.control.counters()["stops"].get(noxus_run), 30, f"a stop of run {noxus_run}")
    message = failure_text(airflow, "e2e_execution_timeout", run_id, "too_long_run")
    assert noxus_run in message, message
    assert "timeout" in message.lower(), message


def test_wrong_api_key_fails_fast_without_a_retry_storm(
    airflow: Any, emulator: Any, secret_keys: tuple[str, ...]
) -> None:
    def refused() -> int:
        """401 answers, all endpoints together."""
        requests = emulator.control.counters()["requests"]
        return sum(int(by_status.get("401", 0)) for by_status in requests.values())

    refused_before = refused()
    run_id = airflow.trigger_dag("e2e_wrong_key")
    state = airflow.wait_for_dag_run("e2e_wrong_key", run_id, timeout=120)

    ti = task_instance(airflow, "e2e_wrong_key", run_id, "refused")
    assert state == "failed"
    assert ti["state"] == "failed"
    # One refused request in all: the hook does not retry a 401, and the error tells Airflow not to
    # spend the task's retries on it (the DAG gives the task retries).
    assert ti["try_number"] == 1
    assert refused() - refused_before == 1
    message = failure_text(airflow, "e2e_wrong_key", run_id, "refused")
    assert "401" in message or "API key" in message, message
    assert not any(key in message for key in secret_keys)


def test_no_secret_in_logs_database_xcom_or_rendered_fields(
    airflow: Any, secret_keys: tuple[str, ...]
) -> None:
    scanned = [path for path in airflow.log_dir.rglob("*") if path.is_file()]
    scanned += sorted(airflow.db_path.parent.glob(airflow.db_path.name + "*"))
    assert any("triggerer" in path.name for path in scanned)
    assert any(".trigger." in path.name for path in scanned), "no trigger log to scan"
    hits = [
        f"{path}: {key[:8]}..."
        for path in scanned
        for key in secret_keys
        if key.encode() in path.read_bytes()
    ]
    assert hits == []

    dag_ids = ("e2e_fan_out", "e2e_mark_failed", "e2e_execution_timeout", "e2e_lost_create", "e2e_wrong_key")
    for dag_id in dag_ids:
        for run in airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]:
            for ti in airflow.task_instances(dag_id, run["dag_run_id"]):
                text = repr(ti["rendered_fields"]) + repr(
                    airflow.xcom_entries(dag_id, run["dag_run_id"], ti["task_id"])
                )
                assert not any(key in text for key in secret_keys), f"{dag_id}.{ti['task_id']}"


def test_print_worker_seconds_per_task(capsys: pytest.CaptureFixture[str]) -> None:
    """Worker time per Noxus task, deferral excluded: small whatever the run's length."""
    assert WORKER_SECONDS, "the scenarios above recorded nothing"
    with capsys.disabled():
        print("\nworker seconds per task (deferral excluded): median / max")
        for label, values in WORKER_SECONDS.items():
            print(f"  {label}: {statistics.median(values):.2f} / {max(values):.2f} over {len(values)} tasks")
