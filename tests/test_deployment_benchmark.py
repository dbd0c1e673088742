"""The deployment benchmark's own readings (benchmarks/deployment_*.py): what it counts must be right,
or the table it prints says nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from deployment_measure import WorkerExecutions, tree_cpu_seconds, xcom_text
from deployment_report import goals
from deployment_variants import accepts

# Lines as Airflow 3.3.2's Celery worker writes them (structlog), with one failure among them.
WORKER_LOG = """\
2026-12-06T23:50:28.060455Z [info     ] Task execute_workload[6ff2c540-5b0b-407b-bc81-fa77874a749c] received [celery.worker.strategy] loc=strategy.py:161
2026-12-06T23:50:28.066101Z [info     ] Task execute_workload[f2281460-cd22-4c96-a4bc-f1201d2929b4] received [celery.worker.strategy] loc=strategy.py:161
2026-12-06T23:50:28.079881Z [info     ] Task execute_workload[5716129c-fc0d-4863-b076-c6fb8d6af8e5] received [celery.worker.strategy] loc=strategy.py:161
2026-12-06T23:50:28.900000Z [info     ] Task execute_workload[6ff2c540-5b0b-407b-bc81-fa77874a749c] succeeded in 0.81s: None [celery.app.trace]
2026-12-06T23:50:29.300000Z [info     ] Task execute_workload[f2281460-cd22-4c96-a4bc-f1201d2929b4] succeeded in 1.2s: None [celery.app.trace]
2026-12-06T23:50:29.500000Z [error    ] Task execute_workload[5716129c-fc0d-4863-b076-c6fb8d6af8e5] raised unexpected: RuntimeError() [celery.app.trace]
"""  # noqa: E501


def test_worker_log_gives_starts_and_the_slot_time_of_finished_tasks() -> None:
    executions = WorkerExecutions.from_log(WORKER_LOG)
    assert (executions.starts, executions.finished) == (3, 2)
    assert executions.slot_seconds == pytest.approx(2.01)


def test_tree_cpu_counts_a_child_that_ended_and_was_reaped() -> None:
    before = tree_cpu_seconds(os.getpid())
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    assert tree_cpu_seconds(os.getpid()) - before >= 0.3


def test_tree_cpu_of_a_gone_process_is_zero() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    assert tree_cpu_seconds(child.pid) == 0.0


def test_only_an_argument_the_class_names_counts_as_accepted() -> None:
    class Named:
        def __init__(self, *, end_from_trigger: bool = False, **kwargs: Any) -> None: ...

    class ThroughKwargs:
        def __init__(self, **kwargs: Any) -> None: ...

    assert accepts(Named, "end_from_trigger")
    assert not accepts(ThroughKwargs, "end_from_trigger")


def row(variant: str, **values: Any) -> dict[str, Any]:
    return {"variant": variant, **values}


def test_goals_are_judged_against_the_empty_task_of_the_same_run() -> None:
    rows = [
        row("empty", cpu_ms_per_task=200, makespan_s=40.0),
        row("operator_triggerer", cpu_ms_per_task=230, makespan_s=42.0, to_success_p99_s=1.5),
        row("sensor_triggerer", worker_task_starts=0),
    ]
    cpu, p99, makespan, sensor = goals(rows, run_seconds=3.0)
    assert cpu.met is False and "1.15x" in cpu.measured
    assert p99.met is True
    assert makespan.met is True  # 42 s <= 3 s + 40 s
    assert sensor.met is True


def test_goals_are_not_applicable_without_their_variant_and_a_worker_start_fails_the_sensor() -> None:
    rows = [row("empty", cpu_ms_per_task=200, makespan_s=40.0), row("sensor_triggerer", worker_task_starts=1)]
    cpu, p99, makespan, sensor = goals(rows, run_seconds=3.0)
    assert (cpu.met, p99.met, makespan.met) == (None, None, None)
    assert sensor.met is False


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("48130af9-ffef", "48130af9-ffef"), ('"48130af9-ffef"', "48130af9-ffef"), (None, None)],
)
def test_a_run_id_pushed_by_the_worker_or_the_triggerer_reads_the_same(stored: Any, expected: Any) -> None:
    assert xcom_text(stored) == expected


def test_the_slot_held_after_a_task_process_ended_is_read_from_its_last_log_line(tmp_path: Path) -> None:
    # Two task processes: one let go of 0.1 s after its last line, one 5 s after (the supervisor
    # missed the end); a deferred task resumed later logs to the same file, matched per finish.
    def task_log(path: str, *times: str) -> None:
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"timestamp": f"2026-12-07T05:52:{at}Z", "event": "x"}) for at in times]
        file.write_text("\n".join([*lines, "not json"]) + "\n")

    task_log("dag_id=d/task_id=t/map_index=0/attempt=1.log", "10.000000", "10.200000", "30.000000")
    task_log("dag_id=d/task_id=t/map_index=1/attempt=1.log", "11.000000", "11.500000")
    worker_log = "\n".join(
        [
            "2026-12-07T05:52:09.9Z [info     ] [c1] Executing workload in Celery: dag_rel_path=x "
            "log_path='dag_id=d/task_id=t/map_index=0/attempt=1.log' ti=TaskInstanceDTO(id=UUID('aaaa-1'), "
            "task_id='t')",
            "2026-12-07T05:52:10.9Z [info     ] [c2] Executing workload in Celery: dag_rel_path=x "
            "log_path='dag_id=d/task_id=t/map_index=1/attempt=1.log' ti=TaskInstanceDTO(id=UUID('bbbb-2'), "
            "task_id='t')",
            "2026-12-07T05:52:10.300000Z [info     ] Workload finished [supervisor] duration=0.4 "
            "exit_code=0 final_state=deferred workload_id=aaaa-1 workload_type=ExecuteTask",
            "2026-12-07T05:52:16.500000Z [info     ] Workload finished [supervisor] duration=5.6 "
            "exit_code=0 final_state=success workload_id=bbbb-2 workload_type=ExecuteTask",
            "2026-12-07T05:52:30.250000Z [info     ] Workload finished [supervisor] duration=0.5 "
            "exit_code=0 final_state=success workload_id=aaaa-1 workload_type=ExecuteTask",
        ]
    )
    held = WorkerExecutions.from_log(worker_log, tmp_path).held_after_end
    assert held == pytest.approx((0.1, 5.0, 0.25))
    assert WorkerExecutions.from_log(worker_log).held_after_end == ()


def test_an_airflow_setting_reaches_the_components_and_a_malformed_one_is_refused() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "deployment_cost.py"
    refused = subprocess.run(
        [sys.executable, str(script), "--quick", "--airflow-setting", "min_heartbeat_interval=1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "expected section.key=value" in refused.stderr
    # In a process of its own: importing the driver sets the deployment's environment.
    code = "import deployment_cost as d; print(d.airflow_setting_env(dict([d.parse_setting('x.a_b=1')])))"
    path = os.pathsep.join([str(script.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    read = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    assert read.stdout.strip().splitlines()[-1] == "{'AIRFLOW__X__A_B': '1'}"
