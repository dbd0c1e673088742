"""End-to-end in a distributed Airflow 3, as production runs it: PostgreSQL, Redis, the CeleryExecutor,
two schedulers, two triggerers and two Celery workers on loopback (conftest.py and
tests/support/distributed_airflow.py).

One deployment for the module; the tests run in file order, each with DAG runs of its own. The first
kills a triggerer for good and the second a scheduler, so the others run with one of each. Run alone with
``pytest -m distributed tests/e2e_distributed``. Printed, not asserted: how long the triggerer takeover
took and the time from a run's end on Noxus to its task's success (p50/p99).

What Airflow itself may do here, and the tests accept because Airflow documents it: a task whose
process stops heartbeating (its worker died) is failed and retried; a triggerer silent for longer than
``[triggerer] triggerer_health_check_threshold`` loses its triggers to a live one; a live scheduler adopts
the tasks of a dead one. Nothing else: no task may fail, and every task has exactly one Noxus run.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from support.airflow_deployment import component_kind
from support.waiting import wait_until as poll_until

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="needs Airflow 3's api-server and task SDK"),
]

FAN_OUT = 200
#: Long enough that the killed triggerer's triggers are still waiting when the other takes them over.
FAN_OUT_SECONDS = 40
#: The triggerer is killed once it holds this many of the fan-out's triggers.
HELD_BEFORE_KILL = 30
#: Mapped tasks of the run during which a scheduler is killed.
SCHEDULER_FAN_OUT = 20
CRASH_QUEUE = "crash"
FINAL_RUN_STATUSES = ("completed", "stopped")


# ----------------------------------------------------------------------------------------- helpers


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll once a second: what is read here (DB rows, counters) changes slowly."""
    return poll_until(condition, timeout, what, interval=1.0)


def runs_created(emulator: Any, workflow_id: str) -> int:
    return int(emulator.control.counters()["runs_created"].get(workflow_id, 0))


def stops(emulator: Any) -> dict[str, int]:
    """Stop requests per Noxus run."""
    result: dict[str, int] = emulator.control.counters()["stops"]
    return result


def task_rows(airflow: Any, dag_id: str, run_id: str, task_id: str) -> dict[int, dict[str, Any]]:
    """``{map_index: row}`` of a task's instances: state, try_number, hostname (the component that ran the
    latest try), end_date and ``noxus_run`` (the Noxus run id the operator pushed to XCom, or None)."""
    rows = airflow.sql(
        "SELECT ti.map_index, ti.state, ti.try_number, ti.hostname, ti.end_date, x.value AS noxus_run"
        " FROM task_instance ti LEFT JOIN xcom x ON x.dag_id = ti.dag_id AND x.run_id = ti.run_id"
        "  AND x.task_id = ti.task_id AND x.map_index = ti.map_index AND x.key = 'run_id'"
        " WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
        (dag_id, run_id, task_id),
    )
    return {int(row["map_index"]): row for row in rows}


def triggers_held(airflow: Any, dag_id: str, run_id: str) -> dict[str, list[int]]:
    """``{triggerer: [map_index, ...]}``: the deferred task instances whose trigger each triggerer holds."""
    held: dict[str, list[int]] = {}
    for row in airflow.sql(
        "SELECT j.hostname, ti.map_index FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id"
        " JOIN job j ON j.id = t.triggerer_id"
        " WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.state = 'deferred'",
        (dag_id, run_id),
    ):
        held.setdefault(str(row["hostname"]), []).append(int(row["map_index"]))
    return held


def noxus_runs_since(emulator: Any, api_key: str, workflow_id: str, since: datetime) -> list[dict[str, Any]]:
    """Every run of the workflow created at or after ``since``, read through the public API like a user."""
    runs: list[dict[str, Any]] = []
    page = 1
    while True:
        query = urllib.parse.urlencode({"page": page, "size": 100})
        request = urllib.request.Request(
            f"{emulator.url}/v1/workflows/{workflow_id}/runs?{query}", headers={"X-API-Key": api_key}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            envelope = json.loads(response.read())
        runs += [run for run in envelope["items"] if utc(run["created_at"]) >= since]
        if page >= envelope["pages"]:
            return runs
        page += 1


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status_reads(emulator: Any) -> int:
    """Status reads of any kind: the triggerers' shared list pages and per-run reads."""
    requests = emulator.control.counters()["requests"]
    return sum(sum(requests.get(endpoint, {}).values()) for endpoint in ("list_runs", "get_run_status"))


def defer_and_poll(airflow: Any, emulator: Any, dag_id: str, run_id: str, task_id: str) -> str:
    """Wait until the task is deferred and its trigger runs in a triggerer; return its Noxus run id.

    Airflow calls a trigger's ``on_kill`` only once a triggerer runs it (README, "Kill and timeouts"):
    the trigger's first status read (it polls; nothing else runs now) says it is running.
    """
    reads_before = status_reads(emulator)

    def deferred_row() -> dict[str, Any] | None:
        rows = task_rows(airflow, dag_id, run_id, task_id).values()
        return next((row for row in rows if row["state"] == "deferred"), None)

    row = wait_until(deferred_row, 180, f"{dag_id}.{task_id} to defer")
    wait_until(lambda: status_reads(emulator) > reads_before, 60, "the trigger's first status read")
    return str(row["noxus_run"])


def error_text(airflow: Any, dag_id: str, run_id: str) -> str:
    """The error lines of a DAG run's task logs (what a user reads to learn why it failed)."""
    lines = []
    for path in airflow.task_log_files(dag_id, run_id):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") in ("error", "critical"):
                lines.append(f"{record.get('event', '')} {record.get('error_detail', '')}")
    return "\n".join(lines)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def spread(seconds: list[float]) -> str:
    """p50, p99 and max of some durations, for a printed line."""
    if not seconds:
        return "no values"
    return (
        f"p50 {statistics.median(seconds):.1f} s, p99 {percentile(seconds, 0.99):.1f} s, "
        f"max {max(seconds):.1f} s over {len(seconds)}"
    )


def trigger_fired_at(airflow: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> datetime | None:
    """When a trigger of the task instance fired its event, from the triggerer's task log."""
    folder = airflow.task_log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    for path in sorted((folder / f"map_index={map_index}").glob("attempt=*.log.trigger.*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"Trigger fired event"' in line:
                return utc(json.loads(line)["timestamp"])
    return None


# ----------------------------------------------------------------------------------------- scenarios


def test_200_deferred_runs_survive_a_triggerer_killed_for_good(
    airflow: Any, emulator: Any, secret_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = emulator.control.workflow_id("slow")
    created_before, stops_before = runs_created(emulator, slow), sum(stops(emulator).values())
    run_id = airflow.trigger_dag("e2e_fan_out", {"count": FAN_OUT, "seconds": FAN_OUT_SECONDS})

    def busiest_triggerer() -> str | None:
        held = triggers_held(airflow, "e2e_fan_out", run_id)
        busiest = max(held, key=lambda name: len(held[name]), default=None)
        return busiest if busiest and len(held[busiest]) >= HELD_BEFORE_KILL else None

    victim = wait_until(busiest_triggerer, 300, f"a triggerer holding {HELD_BEFORE_KILL} triggers")
    # While the triggers exist: their serialized kwargs carry the run, never the key.
    kwargs = [str(row["kwargs"]) for row in airflow.sql("SELECT kwargs FROM trigger")]
    assert any(slow in text for text in kwargs), "trigger kwargs unreadable: the scan would prove nothing"
    assert not any(secret_key in text for text in kwargs)

    survivor = next(c for c in airflow.processes if component_kind(c) == "triggerer" and c != victim)
    victim_job = airflow.live_jobs()[victim]["id"]
    held_by_victim = triggers_held(airflow, "e2e_fan_out", run_id)[victim]
    airflow.kill_component(victim)  # SIGKILL, and no restart: the other triggerer must take over
    killed_at = time.monotonic()

    wait_until(
        lambda: not airflow.sql("SELECT id FROM trigger WHERE triggerer_id = %s", (victim_job,)),
        120,
        f"the triggers of the killed {victim} to move",
    )
    takeover_seconds = time.monotonic() - killed_at
    now_held = triggers_held(airflow, "e2e_fan_out", run_id).get(survivor, [])
    moved = [index for index in now_held if index in held_by_victim]
    assert moved, f"none of the {len(held_by_victim)} triggers of {victim} was taken over by {survivor}"

    state = airflow.wait_for_dag_run("e2e_fan_out", run_id, timeout=900)

    rows = task_rows(airflow, "e2e_fan_out", run_id, "wait_for_run")
    states = {index: row["state"] for index, row in rows.items()}
    assert state == "success", states
    assert sorted(rows) == list(range(FAN_OUT))
    assert set(states.values()) == {"success"}
    # Exactly one run per task, and none stopped: a retried task (Airflow's documented recovery)
    # reattached to its run instead of creating another.
    assert runs_created(emulator, slow) - created_before == FAN_OUT
    assert sum(stops(emulator).values()) == stops_before
    assert len({row["noxus_run"] for row in rows.values()}) == FAN_OUT

    run_ends = {
        index: utc(emulator.control.run(str(row["noxus_run"]))["finished_at"]) for index, row in rows.items()
    }
    to_success = [(row["end_date"] - run_ends[index]).total_seconds() for index, row in rows.items()]
    to_event = [
        (fired - run_ends[index]).total_seconds()
        for index in rows
        if (fired := trigger_fired_at(airflow, "e2e_fan_out", run_id, "wait_for_run", index))
    ]
    retried = sum(1 for row in rows.values() if row["try_number"] > 1)
    with capsys.disabled():
        print(
            f"\n{victim} SIGKILLed holding {len(held_by_victim)} triggers; {survivor} held them all "
            f"{takeover_seconds:.0f} s later ({len(moved)} still waiting then; health-check threshold "
            f"{airflow.env['AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD']} s); "
            f"{retried} of {FAN_OUT} task instances retried by Airflow"
            f"\n{FAN_OUT} deferred tasks polling every 1 s, from the run's end on Noxus:"
            f"\n  to the task's success:  {spread(to_success)}"
            f"\n  to the trigger's event: {spread(to_event)} (the task then ends in the triggerer, unless a"
            " rule sends it back to a worker)"
        )


def test_a_scheduler_killed_for_good_leaves_the_other_to_finish(airflow: Any, emulator: Any) -> None:
    slow = emulator.control.workflow_id("slow")
    created_before, stops_before = runs_created(emulator, slow), sum(stops(emulator).values())
    run_id = airflow.trigger_dag("e2e_fan_out", {"count": SCHEDULER_FAN_OUT, "seconds": 20})

    def busiest_scheduler() -> str | None:
        """The scheduler that queued most of the run's tasks, once a few of them have deferred."""
        rows = airflow.sql(
            "SELECT j.hostname, count(*) AS queued, count(*) FILTER (WHERE ti.state = 'deferred') AS deferred"
            " FROM task_instance ti JOIN job j ON j.id = ti.queued_by_job_id"
            " WHERE ti.dag_id = 'e2e_fan_out' AND ti.run_id = %s AND ti.task_id = 'wait_for_run'"
            " GROUP BY j.hostname ORDER BY queued DESC",
            (run_id,),
        )
        return str(rows[0]["hostname"]) if rows and sum(row["deferred"] for row in rows) >= 3 else None

    victim = wait_until(busiest_scheduler, 240, "3 deferred task instances")
    airflow.kill_component(victim)  # SIGKILL, and no restart

    state = airflow.wait_for_dag_run("e2e_fan_out", run_id, timeout=300)
    states = {
        index: row["state"]
        for index, row in task_rows(airflow, "e2e_fan_out", run_id, "wait_for_run").items()
    }
    assert state == "success", states
    assert sorted(states) == list(range(SCHEDULER_FAN_OUT))
    assert runs_created(emulator, slow) - created_before == SCHEDULER_FAN_OUT
    assert sum(stops(emulator).values()) == stops_before


def test_a_worker_killed_in_create_and_in_a_blocking_wait_leaves_one_run_per_task(
    airflow: Any, emulator: Any, secret_key: str
) -> None:
    slow = emulator.control.workflow_id("slow")
    crash_worker = next(w for w, queues in airflow.worker_queues.items() if CRASH_QUEUE in queues.split(","))
    created_before = runs_created(emulator, slow)
    started = datetime.now(timezone.utc)

    blocking = airflow.trigger_dag("e2e_worker_crash_blocking", {"count": 2, "seconds": 45})

    def both_waiting_on_their_runs() -> bool:
        rows = task_rows(airflow, "e2e_worker_crash_blocking", blocking, "blocking_wait").values()
        seen = [(row["state"], row["hostname"], bool(row["noxus_run"])) for row in rows]
        return seen == [("running", crash_worker, True)] * 2

    wait_until(both_waiting_on_their_runs, 180, f"2 tasks waiting on their runs on {crash_worker}")
    # The next two creates make their runs, then the emulator holds the answers until the worker is
    # gone: the retries must find those runs, not make two more.
    emulator.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=600, count=2)
    creating = airflow.trigger_dag("e2e_worker_crash_create", {"count": 2, "seconds": 5})
    wait_until(lambda: runs_created(emulator, slow) - created_before == 4, 180, "the held creates' runs")
    in_create = task_rows(airflow, "e2e_worker_crash_create", creating, "in_create").values()
    assert [(row["state"], row["hostname"]) for row in in_create] == [("running", crash_worker)] * 2

    airflow.kill_component(crash_worker)  # SIGKILL of the worker and every task process it ran
    airflow.start_component("worker-3", queues=airflow.worker_queues[crash_worker])

    for dag_id, run_id, task_id in (
        ("e2e_worker_crash_blocking", blocking, "blocking_wait"),
        ("e2e_worker_crash_create", creating, "in_create"),
    ):
        state = airflow.wait_for_dag_run(dag_id, run_id, timeout=300)
        rows = task_rows(airflow, dag_id, run_id, task_id).values()
        assert state == "success", [(row["state"], row["try_number"]) for row in rows]
        # Airflow's recovery (task heartbeat timeout, then a retry) ran each lost task again elsewhere.
        assert [(row["state"], row["hostname"]) for row in rows] == [("success", "worker-3")] * 2
        assert all(row["try_number"] >= 2 for row in rows)

    # Exactly one Noxus run per task, and no run left behind.
    assert runs_created(emulator, slow) - created_before == 4
    runs = noxus_runs_since(emulator, secret_key, slow, started)
    assert len(runs) == 4
    orphans = [(run["id"], run["status"]) for run in runs if run["status"] not in FINAL_RUN_STATUSES]
    assert orphans == []


def test_marking_a_deferred_task_failed_stops_its_run(airflow: Any, emulator: Any) -> None:
    run_id = airflow.trigger_dag("e2e_mark_failed")
    noxus_run = defer_and_poll(airflow, emulator, "e2e_mark_failed", run_id, "long_run")

    airflow.set_task_instance_state("e2e_mark_failed", run_id, "long_run", "failed")

    wait_until(lambda: stops(emulator).get(noxus_run), 60, f"a stop of run {noxus_run}")
    assert emulator.control.run(noxus_run)["status"] == "stopped"
    assert task_rows(airflow, "e2e_mark_failed", run_id, "long_run")[-1]["state"] == "failed"


def test_execution_timeout_stops_the_run_and_fails_clearly(airflow: Any, emulator: Any) -> None:
    run_id = airflow.trigger_dag("e2e_execution_timeout")
    state = airflow.wait_for_dag_run("e2e_execution_timeout", run_id, timeout=180)

    row = task_rows(airflow, "e2e_execution_timeout", run_id, "too_long_run")[-1]
    assert state == "failed"
    assert row["state"] == "failed"
    noxus_run = str(row["noxus_run"])
    wait_until(lambda: stops(emulator).get(noxus_run), 30, f"a stop of run {noxus_run}")
    message = error_text(airflow, "e2e_execution_timeout", run_id)
    assert noxus_run in message, message
    assert "timeout" in message.lower(), message


def test_clearing_a_waiting_task_stops_its_run_and_runs_the_task_again(airflow: Any, emulator: Any) -> None:
    slow = emulator.control.workflow_id("slow")
    created_before = runs_created(emulator, slow)
    run_id = airflow.trigger_dag("e2e_clear", {"seconds": 30})
    first = defer_and_poll(airflow, emulator, "e2e_clear", run_id, "cleared_run")

    airflow.clear_task_instances("e2e_clear", run_id, ["cleared_run"])

    wait_until(lambda: stops(emulator).get(first), 60, f"a stop of run {first}")
    state = airflow.wait_for_dag_run("e2e_clear", run_id, timeout=180)
    row = task_rows(airflow, "e2e_clear", run_id, "cleared_run")[-1]
    assert state == "success", row
    assert emulator.control.run(first)["status"] == "stopped"
    assert row["noxus_run"] != first
    assert emulator.control.run(str(row["noxus_run"]))["status"] == "completed"
    assert runs_created(emulator, slow) - created_before == 2


def test_clearing_a_successful_task_creates_a_new_run(airflow: Any, emulator: Any) -> None:
    slow = emulator.control.workflow_id("slow")
    created_before = runs_created(emulator, slow)
    run_id = airflow.trigger_dag("e2e_clear", {"seconds": 2})
    assert airflow.wait_for_dag_run("e2e_clear", run_id, timeout=180) == "success"
    first = task_rows(airflow, "e2e_clear", run_id, "cleared_run")[-1]["noxus_run"]

    airflow.clear_task_instances("e2e_clear", run_id, ["cleared_run"])

    state = airflow.wait_for_dag_run("e2e_clear", run_id, timeout=180)
    row = task_rows(airflow, "e2e_clear", run_id, "cleared_run")[-1]
    assert state == "success", row
    assert row["try_number"] == 2
    # A clear asks for the task to run again: a new run, not the old run's output.
    assert row["noxus_run"] != first
    assert runs_created(emulator, slow) - created_before == 2


def test_no_api_key_in_any_log_or_the_database_dump(airflow: Any, secret_key: str) -> None:
    scanned = [path for path in airflow.log_dir.rglob("*") if path.is_file()]
    names = " ".join(path.name for path in scanned)
    for component in ("scheduler-1", "scheduler-2", "triggerer-1", "triggerer-2", "worker-1", "worker-3"):
        assert f"{component}.log" in names, f"no log of {component} to scan"
    assert ".trigger." in names, "no trigger log to scan"
    hits = [str(path) for path in scanned if secret_key.encode() in path.read_bytes()]
    assert hits == []

    dump = airflow.dump_database()
    assert b"CREATE TABLE" in dump and b"e2e_fan_out" in dump, "an empty dump would prove nothing"
    assert secret_key.encode() not in dump
