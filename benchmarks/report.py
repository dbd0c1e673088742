"""The table, the goals with their ratios, and the chart of the trigger benchmark's result rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The scale the goals are stated for.
GOAL_N = 5000
COLUMNS = (
    ("#", "config_no", "{}"),
    ("configuration", "label", "{}"),
    ("N", "n", "{}"),
    ("checks", "checks", "{}"),
    ("CPU s", "cpu_s", "{:.2f}"),
    ("µs/check", "cpu_per_check_us", "{:.0f}"),
    ("ms/run", "cpu_per_run_ms", "{:.2f}"),
    ("KB RSS/run", "rss_per_run_kb", "{:.1f}"),
    ("lag p50", "lag_p50_ms", "{:.1f}"),
    ("lag p99", "lag_p99_ms", "{:.1f}"),
    ("lag max", "lag_max_ms", "{:.0f}"),
    ("full GCs", "full_gc_count", "{}"),
    ("GC max", "full_gc_max_ms", "{:.0f}"),
    ("wake p50", "wake_p50_ms", "{:.0f}"),
    ("wake p99", "wake_p99_ms", "{:.0f}"),
    ("conns", "connections_opened", "{}"),
    ("fds", "peak_fds", "{}"),
    ("errors", "errors", "{}"),
)


def cell(row: dict[str, Any], key: str, form: str) -> str:
    value = row.get(key)
    return "-" if value is None else form.format(value)


def table(rows: Iterable[dict[str, Any]], *, markdown: bool = False) -> str:
    """The rows as a plain-text table, or as a Markdown one. Times in ms unless the header says."""
    body = [[cell(row, key, form) for _title, key, form in COLUMNS] for row in rows]
    titles = [title for title, _key, _form in COLUMNS]
    if markdown:
        lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(text) for text in column) for column in zip(titles, *body, strict=True)]
    left = {"configuration"}
    render = [
        "  ".join(
            text.ljust(width) if title in left else text.rjust(width)
            for text, width, title in zip(cells, widths, titles, strict=True)
        )
        for cells in [titles, *body]
    ]
    return "\n".join(render)


@dataclass(frozen=True)
class Goal:
    """One goal of the issue, judged on the rows: ``met`` is None when the rows cannot tell."""

    text: str
    measured: str
    met: bool | None

    def line(self) -> str:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[self.met]
        return f"  [{verdict:>7}] {self.text}: {self.measured}"


def find(rows: list[dict[str, Any]], config: str, n: int | None = None) -> list[dict[str, Any]]:
    return [row for row in rows if row["config"] == config and (n is None or row["n"] == n)]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def cpu_ratio_goal(
    text: str, numerator: dict[str, Any], denominator: dict[str, Any], limit: float, *, at_least: bool = False
) -> Goal:
    """The goal that the CPU per check of ``numerator`` over ``denominator``'s stays below ``limit``
    (or reaches it, with ``at_least``)."""
    value = ratio(numerator["cpu_per_check_us"], denominator["cpu_per_check_us"])
    if value is None:
        return Goal(text, "no checks", None)
    measured = f"{numerator['cpu_per_check_us']} / {denominator['cpu_per_check_us']} µs = {value:.2f}x"
    return Goal(text, measured, value >= limit if at_least else value <= limit)


def goals(rows: list[dict[str, Any]]) -> list[Goal]:
    """Every goal of the benchmark issue, with the measured value or ratio."""
    judged: list[Goal] = []
    at_scale = find(rows, "poll", GOAL_N)
    if at_scale:
        row = at_scale[0]
        judged.append(
            Goal(f"{GOAL_N:,} waiting runs, poll: no errors", f"{row['errors']}", row["errors"] == 0)
        )
        judged.append(
            Goal(
                f"{GOAL_N:,} waiting runs: lag p99 < 100 ms",
                f"{row['lag_p99_ms']} ms",
                row["lag_p99_ms"] < 100,
            )
        )
        judged.append(
            Goal(
                f"{GOAL_N:,} waiting runs: < 50 KB RSS per run",
                f"{row['rss_per_run_kb']} KB",
                row["rss_per_run_kb"] < 50,
            )
        )
    else:
        judged.append(Goal(f"{GOAL_N:,} waiting runs (errors, lag, RSS)", "not measured in this mode", None))
    for ours in find(rows, "poll"):
        n = ours["n"]
        for floor in find(rows, "raw_shared", n):
            judged.append(
                cpu_ratio_goal(
                    f"N={n:,}: CPU/check of poll <= 1.5x the raw shared-session floor", ours, floor, 1.5
                )
            )
        for sensor in find(rows, "http_sensor", n):
            judged.append(
                cpu_ratio_goal(
                    f"N={n:,}: HttpSensorTrigger >= 5x poll's CPU/check", sensor, ours, 5, at_least=True
                )
            )
    for stream in find(rows, "stream"):
        p50, p99 = stream["wake_p50_ms"], stream["wake_p99_ms"]
        judged.append(
            Goal(
                f"N={stream['n']:,}: stream wake p50 < 100 ms and p99 < 500 ms",
                f"p50 {p50} ms, p99 {p99} ms",
                None if p50 is None or p99 is None else p50 < 100 and p99 < 500,
            )
        )
    return judged


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """CPU per status check and loop lag p99 against N, one line per configuration (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cpu_axes, lag_axes) = plt.subplots(1, 2, figsize=(12, 4.8))
    configs = sorted({row["config"] for row in rows}, key=lambda config: find(rows, config)[0]["config_no"])
    for config in configs:
        series = sorted(find(rows, config), key=lambda row: row["n"])
        label = f"{series[0]['config_no']}. {series[0]['label']}"
        style = {"marker": "o", "label": label, "color": f"C{series[0]['config_no'] - 1}"}
        with_checks = [row for row in series if row["cpu_per_check_us"] is not None]
        if with_checks:
            cpu_axes.plot(
                [row["n"] for row in with_checks],
                [row["cpu_per_check_us"] for row in with_checks],
                **style,
            )
        lag_axes.plot(
            [row["n"] for row in series],
            [max(row["lag_p99_ms"], 0.1) for row in series],
            **style,
        )
    cpu_axes.set(title="CPU per status check", xlabel="runs waited on at once (N)", ylabel="µs of CPU")
    cpu_axes.set_ylim(bottom=0)
    lag_axes.set(title="Event-loop lag p99", xlabel="runs waited on at once (N)", ylabel="ms (log)")
    lag_axes.set_yscale("log")
    lag_axes.axhline(100, color="grey", linestyle="--", linewidth=1)
    lag_axes.annotate("goal: 100 ms", xy=(0.02, 100), xycoords=("axes fraction", "data"), color="grey")
    sizes = sorted({row["n"] for row in rows})
    for axes in (cpu_axes, lag_axes):
        axes.set_xscale("log")
        axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axes.minorticks_off()
        axes.grid(True, alpha=0.3)
    handles, labels = lag_axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize="small")
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
