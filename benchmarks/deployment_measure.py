"""What the deployment benchmark (:mod:`deployment_cost`) reads: CPU of process trees, the Celery
worker's log and task logs, and the metadata DB's task instances of one DAG run.

CPU of a component is the sum, over its process tree, of each live process's user + system time plus
the time of the children it has reaped (``children_user``/``children_system``): a task process that
ended between two samples is counted once, in its parent. A process re-parented away from the tree
(none of Airflow's are) would be lost.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

#: Celery logs one "received" per task it takes and one "succeeded in <s>s" per task it finished.
CELERY_RECEIVED = re.compile(r"Task \S+\[[0-9a-f-]+\] received")
CELERY_SUCCEEDED = re.compile(r"Task \S+\[[0-9a-f-]+\] succeeded in ([0-9.]+)s")
#: The task supervisor (Airflow 3's task SDK) logs where each task process logs, and when it let go of
#: the workload; both name the task instance.
WORKLOAD_STARTED = re.compile(
    r"Executing workload in Celery: .*?log_path='(?P<path>[^']+)'"
    r".*?TaskInstanceDTO\(id=UUID\('(?P<ti>[0-9a-f-]+)'"
)
WORKLOAD_FINISHED = re.compile(r"^(?P<at>\S+) .*Workload finished .*?workload_id=(?P<ti>[0-9a-f-]+)", re.M)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live descendants and every child they reaped; 0 when it is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def cpu_sample(roots: dict[str, int]) -> dict[str, float]:
    """``{component: CPU seconds so far}`` for ``{component: root PID}``."""
    return {name: tree_cpu_seconds(pid) for name, pid in roots.items()}


@dataclass(frozen=True)
class WorkerExecutions:
    """What the Celery worker ran: tasks taken (each start of a task process, resumes included), the
    slot-seconds of those that finished, and for each, how long its slot stayed taken after the task
    process's last log line (Airflow's supervisor noticing the process is gone, see
    :func:`held_after_task_end`)."""

    starts: int
    finished: int
    slot_seconds: float
    held_after_end: tuple[float, ...] = ()

    @classmethod
    def from_log(cls, text: str, task_log_dir: Path | None = None) -> WorkerExecutions:
        """Read the part of the worker's log written during one variant.

        :param task_log_dir: the task logs' base folder; without it, nothing is held after the end.
        """
        runtimes = [float(match.group(1)) for match in CELERY_SUCCEEDED.finditer(text)]
        held = held_after_task_end(text, task_log_dir) if task_log_dir else ()
        return cls(len(CELERY_RECEIVED.findall(text)), len(runtimes), sum(runtimes), held)


def held_after_task_end(worker_log: str, task_log_dir: Path) -> tuple[float, ...]:
    """Seconds from each task process's last log line to its supervisor's "Workload finished".

    The task process logs up to its end; what follows until the supervisor lets go of the workload is
    the supervisor noticing that the process is gone (Airflow 3.3.2 can miss it for up to
    ``[workers] min_heartbeat_interval``). A deferred task resumed on a worker logs to the same file:
    each finish is matched with the last line written before it.
    """
    paths = {match["ti"]: match["path"] for match in WORKLOAD_STARTED.finditer(worker_log)}
    held = []
    for finish in WORKLOAD_FINISHED.finditer(worker_log):
        path = paths.get(finish["ti"])
        if path is None:
            continue
        finished_at = parse_utc(finish["at"])
        written = [at for at in task_log_times(task_log_dir / path) if at <= finished_at]
        if written:
            held.append((finished_at - max(written)).total_seconds())
    return tuple(held)


def task_log_times(path: Path) -> list[datetime]:
    """The timestamps of a task log's JSON lines (none for a missing file)."""
    times = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                times.append(parse_utc(json.loads(line)["timestamp"]))
    return times


def parse_utc(text: str) -> datetime:
    """A timestamp as Airflow's logs write it (``2026-12-07T05:52:21.576579Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class TaskOutcome:
    """One task instance at the end of a variant.

    :param key: ``task_id[map_index]``.
    :param state: its final state.
    :param try_number: Airflow's try count (a deferral's resume is the same try).
    :param end: when it ended.
    :param noxus_run: the Noxus run it waited on, when known.
    """

    key: str
    state: str
    try_number: int
    end: datetime | None
    noxus_run: str | None


def task_outcomes(airflow: Any, dag_id: str, run_id: str, run_xcom_key: str | None) -> list[TaskOutcome]:
    """The DAG run's task instances, each with the Noxus run id its task pushed under ``run_xcom_key``."""
    rows = airflow.sql(
        "SELECT ti.task_id, ti.map_index, ti.state, ti.try_number, ti.end_date, x.value AS noxus_run"
        " FROM task_instance ti LEFT JOIN xcom x ON x.dag_id = ti.dag_id AND x.run_id = ti.run_id"
        "  AND x.task_id = ti.task_id AND x.map_index = ti.map_index AND x.key = %s"
        " WHERE ti.dag_id = %s AND ti.run_id = %s",
        (run_xcom_key or "", dag_id, run_id),
    )
    return [
        TaskOutcome(
            key=str(row["task_id"]) + (f"[{row['map_index']}]" if row["map_index"] >= 0 else ""),
            state=str(row["state"]),
            try_number=int(row["try_number"] or 0),
            end=row["end_date"],
            noxus_run=xcom_text(row["noxus_run"]),
        )
        for row in rows
    ]


def xcom_text(value: Any) -> str | None:
    """A string XCom as read from the ``xcom.value`` JSON column. A value the triggerer pushed (a task
    it ended, Airflow 3.3.2) is stored JSON-encoded once more than one a worker pushed: decode it."""
    if isinstance(value, str) and value.startswith('"'):
        value = json.loads(value)
    return None if value is None else str(value)


def dag_run_row(airflow: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """``state``, ``queued_at`` and ``end_date`` of a DAG run, from the metadata DB."""
    rows = airflow.sql(
        "SELECT state, queued_at, end_date FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id)
    )
    return rows[0] if rows else {"state": None}


def task_state_counts(airflow: Any, dag_id: str, run_id: str) -> dict[str, int]:
    """``{state: count}`` of a DAG run's task instances (``"none"`` for no state yet)."""
    rows = airflow.sql(
        "SELECT COALESCE(state, 'none') AS state, count(*) AS n FROM task_instance"
        " WHERE dag_id = %s AND run_id = %s GROUP BY state",
        (dag_id, run_id),
    )
    return {str(row["state"]): int(row["n"]) for row in rows}
