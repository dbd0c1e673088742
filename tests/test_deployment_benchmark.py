"""The deployment benchmark's own readings (benchmarks/deployment_*.py): what it counts must be right,
or the table it prints says nothing."""

from __future__ import annotations

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
