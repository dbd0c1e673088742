"""The side-by-side table and the goals (issue 22) of the deployment benchmark's result rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from report import Goal, ratio_goal, threshold_goal

FLOOR = "empty"
COMPONENT_ORDER = ("api-server", "scheduler-1", "triggerer-1", "worker-1", "postgresql", "redis")


def ratio(row: dict[str, Any], floor: dict[str, Any] | None, key: str) -> str:
    """``row[key]`` with its ratio against the empty task's, e.g. ``812 (1.48x)``."""
    value = row.get(key)
    if value is None:
        return "-"
    base = None if floor is None else floor.get(key)
    return f"{value:g} ({value / base:.2f}x)" if base and row is not floor else f"{value:g}"


def table(rows: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """One line per variant: what it costs, with ratios against the empty task."""
    floor = next((row for row in rows if row["variant"] == FLOOR), None)
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("variant", lambda row: row["label"]),
        ("ok/N (retried)", lambda row: f"{row['succeeded']}/{row['tasks']} ({row['retried']})"),
        ("CPU ms/task", lambda row: ratio(row, floor, "cpu_ms_per_task")),
        ("raw CPU ms/task", lambda row: f"{row['cpu_raw_ms_per_task']}"),
        ("worker starts", lambda row: f"{row['worker_task_starts']}"),
        ("slot-s/task", lambda row: ratio(row, floor, "worker_slot_s_per_task")),
        ("held after end s/task (>=1 s)", held_after_end),
        ("makespan s", lambda row: ratio(row, floor, "makespan_s")),
        ("end->success p50/p99 s", lambda row: f"{row['to_success_p50_s']}/{row['to_success_p99_s']}"),
    ]
    by_component = [
        (name, lambda row, name=name: f"{row['cpu_ms_per_task_by_component'].get(name, '-')}")
        for name in COMPONENT_ORDER
    ]
    return "\n\n".join(
        render([("variant", columns[0][1]), *by_component] if part else columns, rows, markdown)
        for part in (False, True)
    )


def held_after_end(row: dict[str, Any]) -> str:
    """Slot-seconds per task after the task processes ended, and how many ends were held 1 s or more."""
    held = row.get("slot_held_after_task_end_s_per_task")
    return "-" if held is None else f"{held:g} ({row.get('task_ends_held_1s_or_more', 0)})"


def render(
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]], rows: list[dict[str, Any]], md: bool
) -> str:
    cells = [[header for header, _ in columns]] + [[show(row) for _, show in columns] for row in rows]
    if md:
        lines = ["| " + " | ".join(line) + " |" for line in cells]
        lines.insert(1, "|" + "---|" * len(columns))
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    )


def goals(rows: list[dict[str, Any]], run_seconds: float) -> list[Goal]:
    """Issue 22's goals, each judged against the empty task of the same run; n/a without the variant."""
    found = {row["variant"]: row for row in rows}
    floor, ending, sensor = (
        found.get(FLOOR, {}),
        found.get("operator_triggerer"),
        found.get("sensor_triggerer"),
    )
    in_triggerer = "ending in the triggerer"
    makespan_bound = None
    if ending and floor.get("makespan_s") is not None and ending["makespan_s"] is not None:
        # As a ratio goal: the makespan over (run length + the empty fan-out's) at most 1.
        makespan_bound = {"makespan_s": run_seconds + floor["makespan_s"]}
    return [
        ratio_goal(
            f"{in_triggerer}: CPU per Noxus task <= 1.1x an empty @task's",
            "cpu_ms_per_task", "ms", ending or {}, floor, 1.1,
        ),
        threshold_goal(
            f"{in_triggerer}: run end -> task success p99 < 3 s with worker slots scarce",
            ending if ending and ending["to_success_p99_s"] is not None else None,
            "to_success_p99_s", " s", 3.0,
        ),
        ratio_goal(
            f"{in_triggerer}: makespan <= run length + the empty fan-out's makespan",
            "makespan_s", "s", ending or {}, makespan_bound or {}, 1.0,
        ),
        threshold_goal(
            "sensor started and ended in the triggerer: 0 worker task starts",
            sensor, "worker_task_starts", " starts", 1,
        ),
    ]  # fmt: skip
