"""Every benchmark of the provider, from one command.

``python benchmarks/run_all.py`` (``make bench``): the emulator's throughput
(``benchmarks/emulator_throughput.py``) then the trigger benchmark (:mod:`trigger_scale`) at
N = 1,000 and 5,000, about 15 minutes on 2 cores. It needs apache-airflow-providers-http (the
``HttpSensorTrigger`` configuration) and matplotlib (the chart); when they are missing it re-runs
itself in the benchmark virtualenv (``scripts/venv.sh 3.3.2 bench``). Results:
``benchmarks/results/latest.json`` (one object per configuration and N), ``latest-meta.json``
(machine, plan, goals, emulator numbers), ``latest.md`` (the table and goals in Markdown) and
``triggers.png``. Then the deployment benchmark (``benchmarks/deployment_cost.py``: N = 200 tasks of
each variant on PostgreSQL, Redis and Celery with one 4-slot worker, 24 minutes more on a loaded
machine; results in ``deployment-latest.json``).

``python benchmarks/run_all.py --quick``: the same harness at N = 100 with runs of 1-3 s (under a
minute), for CI, and the deployment benchmark's dry check (its DAG files parse; no deployment).
Without providers-http or matplotlib it skips configuration 5 and the chart and says so. It fails
(exit 1) only when a benchmark breaks (errors, a crash), never because something is slow.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
REEXEC_FLAG = "NOXUS_BENCH_REEXEC"
BENCH_VENV_COMMAND = "V=$(bash scripts/venv.sh 3.3.2 bench) && $V/bin/python benchmarks/run_all.py"

# The harness imports airflow in its driver processes: give them a home before anything does.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="noxus-bench-airflow-"))
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import trigger_scale  # noqa: E402

Case, EACH = trigger_scale.Case, trigger_scale.EACH
FULL_PLAN = trigger_scale.Plan(
    cases=(
        Case("poll_shared", 1000),
        Case("poll_shared", 1000, workflows=EACH),
        Case("raw_shared", 1000),
        Case("http_sensor", 1000),
        Case("poll_shared", 2000, burst=True),
        Case("poll_shared", 5000),
        Case("poll_shared", 5000, workflows=10),
        Case("poll_shared", 5000, workflows=EACH),
        Case("poll_per_run", 5000),
        Case("raw_shared", 5000),
        Case("http_sensor", 5000),
        Case("poll_shared", 10000),
        Case("raw_shared", 10000),
    ),
    run_seconds=(30.0, 90.0),
    interval=5.0,
    spread=5.0,
)
QUICK_PLAN = trigger_scale.Plan(
    cases=(
        Case("poll_shared", 100),
        Case("poll_shared", 100, workflows=10),
        Case("poll_shared", 100, workflows=EACH),
        Case("poll_shared", 100, burst=True),
        Case("poll_per_run", 100),
        Case("raw_shared", 100),
        Case("http_sensor", 100),
        Case("stream", 100),
    ),
    run_seconds=(1.0, 3.0),
    interval=0.5,
    spread=0.5,
)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def missing_extras() -> dict[str, str]:
    """Benchmark-only packages this interpreter lacks: what each one is needed for."""
    needed = {
        "airflow.providers.http": ("apache-airflow-providers-http", "configuration 5 (HttpSensorTrigger)"),
        "matplotlib": ("matplotlib", "the chart"),
    }
    return {package: purpose for module, (package, purpose) in needed.items() if not has_module(module)}


def reexec_in_bench_venv(missing: dict[str, str]) -> None:
    """Replace this process by the same command in the benchmark virtualenv, or exit explaining how."""
    print(f"missing here: {', '.join(missing)}; switching to the benchmark virtualenv", flush=True)
    if os.environ.get(REEXEC_FLAG):
        sys.exit(f"still missing in {sys.prefix}: {', '.join(missing)}. Run: {BENCH_VENV_COMMAND}")
    made = subprocess.run(
        ["bash", str(REPO / "scripts" / "venv.sh"), "3.3.2", "bench"], stdout=subprocess.PIPE, text=True
    )
    python = Path(made.stdout.strip()) / "bin" / "python"
    if made.returncode != 0 or not python.exists():
        sys.exit(f"could not make the benchmark virtualenv. Run: {BENCH_VENV_COMMAND}")
    os.environ[REEXEC_FLAG] = "1"
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def sub_benchmark(script_name: str, title: str, quick: bool, *args: str) -> dict[str, Any]:
    """Run another benchmark script of this folder, if present; its output and exit status."""
    script = HERE / script_name
    if not script.exists():
        print(f"{title}: benchmarks/{script_name} not found, skipped")
        return {"skipped": True}
    print(f"=== {title} ===", flush=True)
    done = subprocess.run(
        [sys.executable, str(script), *(["--quick"] if quick else []), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    print(done.stdout, end="", flush=True)
    return {"exit_code": done.returncode, "output": done.stdout}


def measured_commit() -> str:
    """The commit measured, with ``+changes`` when the working tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "airflow_provider_noxus"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import resource

    import aiohttp

    with open("/proc/cpuinfo") as cpuinfo:
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]

    return {
        "cpu": models[0] if models else "",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=100, runs of 1-3 s: under a minute, for CI")
    parser.add_argument(
        "--out", type=Path, help="results directory (default benchmarks/results; a temp dir with --quick)"
    )
    parser.add_argument("--profile", type=Path, help="also record py-spy profiles of every driver here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_before = os.getloadavg()
    commit = measured_commit()

    missing = missing_extras()
    if missing and not args.quick:
        reexec_in_bench_venv(missing)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    notes: list[str] = []
    if "apache-airflow-providers-http" in missing:
        plan = replace(plan, cases=tuple(case for case in plan.cases if case.config != "http_sensor"))
        notes.append(
            "configuration 5 (HttpSensorTrigger) skipped: apache-airflow-providers-http not installed"
        )
    if "matplotlib" in missing:
        notes.append("chart skipped: matplotlib is not installed")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        plan = replace(plan, profile_dir=args.profile)
    for note in notes:
        print(f"NOTE: {note}", flush=True)
    out = args.out or (Path(tempfile.mkdtemp(prefix="noxus-bench-quick-")) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    emulator = sub_benchmark("emulator_throughput.py", "emulator throughput", args.quick)
    low, high = plan.run_seconds
    print(
        f"\n=== triggers: runs of {low:g}-{high:g} s, a status check every {plan.interval:g} s, "
        f"runs arriving over {plan.spread:g} s (a burst: at once) ===",
        flush=True,
    )
    rows = trigger_scale.run_plan(plan)
    judged = report.goals(rows)

    print()
    print(report.table(rows))
    scope = " (informational: they are stated for N=2,000-10,000)" if args.quick else ""
    print(f"\nGoals (issue 14, then the earlier ones still measured){scope}:")
    for goal in judged:
        print(goal.line())
    for row in rows:
        for example in row["error_examples"]:
            print(f"ERROR in {row['series']} N={row['n']}: {example}")

    (out / "latest.json").write_text(json.dumps(rows, indent=1) + "\n")
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "commit": commit,
        "machine": machine(),
        "plan": {
            "cases": [asdict(case) for case in plan.cases],
            "run_seconds": plan.run_seconds,
            "interval_s": plan.interval,
            "spread_s": plan.spread,
        },
        "notes": notes,
        "goals": [{"goal": goal.text, "measured": goal.measured, "met": goal.met} for goal in judged],
        "emulator_throughput": emulator,
        "duration_s": round(time.monotonic() - started),
        "load_average": {
            "before": load_before,
            "after": os.getloadavg(),
            "per_case_1min": [row["load_1min"] for row in rows],
        },
    }
    (out / "latest-meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    goal_lines = "\n".join(f"- {goal.line().strip()}" for goal in judged)
    (out / "latest.md").write_text(f"{report.table(rows, markdown=True)}\n\nGoals:\n\n{goal_lines}\n")
    if "matplotlib" not in missing:
        report.chart(rows, out / "triggers.png")
    print(f"\nresults in {out} ({time.monotonic() - started:.0f} s in all)")

    print()
    deployment = sub_benchmark(
        "deployment_cost.py", "deployment cost per task", args.quick, "--out", str(out)
    )
    broken = [f"{row['label']} N={row['n']}" for row in rows if row["errors"]]
    if emulator.get("exit_code"):
        broken.append("emulator throughput")
    if deployment.get("exit_code"):
        broken.append("deployment cost")
    if broken:
        print(f"FAILED (errors, not slowness): {', '.join(broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
