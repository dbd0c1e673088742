"""The table, the goals with their ratios, and the chart of the trigger benchmark's result rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The scales the goals are stated for.
GOAL_N = 5000
LARGE_N = 10000
BURST_N = 2000
#: The floor every ratio is taken against.
FLOOR = "raw_shared"
COLUMNS = (
    ("#", "config_no", "{}"),
    ("configuration", "label", "{}"),
    ("wf", "workflows", "{}"),
    ("arrival", "arrival", "{}"),
    ("N", "n", "{}"),
    ("requests", "api_requests", "{}"),
    ("req/run/int", "requests_per_run_interval", "{:.3f}"),
    ("req/int peak", "requests_peak_per_interval", "{}"),
    ("pages", "list_pages", "{}"),
    ("run reads", "run_reads", "{}"),
    ("CPU s", "cpu_s", "{:.2f}"),
    ("ms/run", "cpu_per_run_ms", "{:.2f}"),
    ("ms/run-min", "cpu_per_run_minute_ms", "{:.2f}"),
    ("µs/req", "cpu_per_request_us", "{:.0f}"),
    ("µs/run-int steady", "cpu_steady_per_run_interval_us", "{:.0f}"),
    ("start ms/run", "cpu_start_per_run_ms", "{:.2f}"),
    ("GC s", "gc_s", "{:.1f}"),
    ("KB RSS/run", "rss_per_run_kb", "{:.1f}"),
    ("lag p50", "lag_p50_ms", "{:.1f}"),
    ("lag p99", "lag_p99_ms", "{:.1f}"),
    ("lag max", "lag_max_ms", "{:.0f}"),
    ("start lag p99", "start_lag_p99_ms", "{:.0f}"),
    ("full GCs", "full_gc_count", "{}"),
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
    left = {"configuration", "arrival"}
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
    """One goal of an issue, judged on the rows: ``met`` is None when the rows cannot tell."""

    text: str
    measured: str
    met: bool | None

    def line(self) -> str:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[self.met]
        return f"  [{verdict:>7}] {self.text}: {self.measured}"


def find(
    rows: list[dict[str, Any]],
    config: str,
    n: int | None = None,
    *,
    workflows: str = "1",
    arrival: str = "spread",
) -> list[dict[str, Any]]:
    return [
        row
        for row in rows
        if row["config"] == config
        and (n is None or row["n"] == n)
        and row["workflows"] == workflows
        and row["arrival"] == arrival
    ]


def ratio_goal(
    text: str, key: str, unit: str, numerator: dict[str, Any], denominator: dict[str, Any], limit: float
) -> Goal:
    """The goal that ``numerator[key] / denominator[key]`` stays at or below ``limit``."""
    top, bottom = numerator.get(key), denominator.get(key)
    if top is None or not bottom:
        return Goal(text, f"no {key}", None)
    value = top / bottom
    return Goal(text, f"{top} / {bottom} {unit} = {value:.2f}x", value <= limit)


def threshold_goal(text: str, row: dict[str, Any] | None, key: str, unit: str, below: float) -> Goal:
    """The goal that ``row[key]`` stays under ``below``; n/a without the row."""
    if row is None:
        return Goal(text, "not measured in this run", None)
    return Goal(text, f"{row[key]}{unit}", row[key] < below)


def goals(rows: list[dict[str, Any]]) -> list[Goal]:
    """Every goal of issue 14 (shared status checks), then the earlier goals still measured."""
    judged: list[Goal] = []

    def first(found: list[dict[str, Any]]) -> dict[str, Any] | None:
        return found[0] if found else None

    shared = first(find(rows, "poll_shared", GOAL_N))
    text = f"shared checks, one workflow, N={GOAL_N:,}"
    floor = first(find(rows, FLOOR, GOAL_N))
    if shared is not None and floor is not None:
        judged.append(
            ratio_goal(
                f"{text}: CPU per waiting run <= 0.3x the floor's", "cpu_per_run_ms", "ms", shared, floor, 0.3
            )
        )
    else:
        judged.append(
            Goal(f"{text}: CPU per waiting run <= 0.3x the floor's", "not measured in this run", None)
        )
    if shared is not None and shared["request_allowance_max_ratio"] is not None:
        worst = shared["request_allowance_max_ratio"]
        judged.append(
            Goal(
                f"{text}: API requests per interval <= N/50 + the runs that finished",
                f"peak {shared['requests_peak_per_interval']} per interval (N/50 = {GOAL_N // 50}); "
                f"worst interval at {worst:.2f}x its allowance; "
                f"{shared['requests_per_run_interval']:.4f} per waiting run per interval",
                worst <= 1,
            )
        )
    judged.append(threshold_goal(f"{text}: loop lag p99 < 100 ms", shared, "lag_p99_ms", " ms", 100))
    judged.append(threshold_goal(f"{text}: 0 errors", shared, "errors", "", 1))

    large = first(find(rows, "poll_shared", LARGE_N))
    text = f"shared checks, one workflow, N={LARGE_N:,} in one process"
    judged.append(threshold_goal(f"{text}: 0 errors", large, "errors", "", 1))
    judged.append(threshold_goal(f"{text}: loop lag p99 < 200 ms", large, "lag_p99_ms", " ms", 200))
    judged.append(threshold_goal(f"{text}: < 25 KB RSS per waiting run", large, "rss_per_run_kb", " KB", 25))

    worst_cases = find(rows, "poll_shared", workflows="each")
    for each in worst_cases:
        for floor in find(rows, FLOOR, each["n"]):
            judged.append(
                ratio_goal(
                    f"one run per workflow, N={each['n']:,}: CPU per check <= 1.3x the floor's",
                    "cpu_per_request_us",
                    "µs",
                    each,
                    floor,
                    1.3,
                )
            )
    if not worst_cases:
        judged.append(Goal("one run per workflow: CPU per check <= 1.3x the floor's", "not measured", None))

    burst = first(find(rows, "poll_shared", BURST_N, arrival="burst"))
    judged.append(
        threshold_goal(
            f"a burst of {BURST_N:,} trigger starts: loop lag p99 < 100 ms (from the first start to two "
            "intervals after the last)",
            burst,
            "start_lag_p99_ms",
            " ms",
            100,
        )
    )
    return judged + earlier_goals(rows)


def earlier_goals(rows: list[dict[str, Any]]) -> list[Goal]:
    """The goals of the first benchmark issue that this run still measures."""
    judged = []
    for ours in find(rows, "poll_per_run"):
        for floor in find(rows, FLOOR, ours["n"]):
            judged.append(
                ratio_goal(
                    f"(earlier) N={ours['n']:,}: CPU per check of the per-run poll <= 1.5x the floor's",
                    "cpu_per_request_us",
                    "µs",
                    ours,
                    floor,
                    1.5,
                )
            )
    for stream in find(rows, "stream"):
        p50, p99 = stream["wake_p50_ms"], stream["wake_p99_ms"]
        judged.append(
            Goal(
                f"(earlier) N={stream['n']:,}: stream wake p50 < 100 ms and p99 < 500 ms",
                f"p50 {p50} ms, p99 {p99} ms",
                None if p50 is None or p99 is None else p50 < 100 and p99 < 500,
            )
        )
    return judged


#: The chart's panels: (title, row key, y label, log scale).
PANELS: tuple[tuple[str, str, str, bool], ...] = (
    ("CPU per waiting run", "cpu_per_run_ms", "ms of CPU (whole wait)", False),
    ("API requests per interval", "requests_per_interval", "requests per poll interval", True),
    ("Event-loop lag p99", "lag_p99_ms", "ms", True),
)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """CPU per waiting run, requests per interval and loop lag p99 against N, one line per series
    (configuration, workflows, arrival), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes_row = plt.subplots(1, len(PANELS), figsize=(16, 5.2))
    numbers = sorted({row["config_no"] for row in rows})
    for number in numbers:
        series = sorted((row for row in rows if row["config_no"] == number), key=lambda row: row["n"])
        style = {
            "marker": "s" if series[0]["arrival"] == "burst" else "o",
            "label": f"{number}. {series[0]['series']}",
            "color": f"C{(number - 1) % 10}",
        }
        for (_title, key, _unit, _log), axes in zip(PANELS, axes_row, strict=True):
            points = [(row["n"], row[key]) for row in series if row.get(key) is not None]
            if points:
                axes.plot(*zip(*((n, max(value, 0.01)) for n, value in points), strict=True), **style)
    sizes = sorted({row["n"] for row in rows})
    requests_axes, lag_axes = axes_row[1], axes_row[2]
    requests_axes.plot(sizes, [size / 50 for size in sizes], color="grey", linestyle="--", linewidth=1)
    requests_axes.annotate(
        "goal: N/50", xy=(sizes[-1], sizes[-1] / 50), color="grey", ha="right", va="bottom"
    )
    lag_axes.axhline(100, color="grey", linestyle="--", linewidth=1)
    lag_axes.annotate("goal: 100 ms", xy=(0.02, 100), xycoords=("axes fraction", "data"), color="grey")
    for (title, _key, unit, log), axes in zip(PANELS, axes_row, strict=True):
        axes.set(title=title, xlabel="runs waited on at once (N)", ylabel=unit)
        axes.set_xscale("log")
        if log:
            axes.set_yscale("log")
        else:
            axes.set_ylim(bottom=0)
        axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axes.minorticks_off()
        axes.grid(True, alpha=0.3)
    handles, labels = axes_row[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize="small")
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
