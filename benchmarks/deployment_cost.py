"""What a Noxus task costs the whole deployment, side by side with an empty ``@task``, in one run.

``python benchmarks/deployment_cost.py`` (``make bench-deployment``, part of ``make bench``) starts the
distributed harness (tests/support/distributed_airflow.py: PostgreSQL, Redis, the CeleryExecutor, one
api-server, scheduler and triggerer, one Celery worker with few slots; the DAGs are serialized once, no
dag-processor) and the emulator, then runs each variant of benchmarks/deployment_variants.py in turn,
N tasks on runs of a few seconds:

- an empty mapped ``@task`` (Airflow's own floor per task);
- the same in a DAG file that imports the provider (what the import adds to every task process);
- the Noxus operator resuming on a worker (``end_from_trigger=False`` when the build has it);
- the Noxus operator ending in the triggerer (``end_from_trigger=True``);
- the sensor started and ended in the triggerer (N unmapped sensors: Airflow 3.3 never starts a
  mapped task from the triggerer); the driver creates their runs and passes the ids in the conf;
- a plain ``@task`` that creates its run and waits on it with the hook (holds a slot: the naive way).

For each: CPU of every Airflow process tree plus PostgreSQL and Redis per task, above the deployment's
idle rate (measured after a warm-up DAG) and raw; the makespan (DAG run queued -> last task end);
worker task starts and slot-seconds per task (the Celery worker's log: one "received" per task
process, "succeeded in" its slot time, both executions of a deferred task included), and of those the
seconds after each task process's last log line (Airflow 3.3.2's supervisor can take up to
``[workers] min_heartbeat_interval``, 5 s by default, to notice a process that ended); from each Noxus
run's end to its task's success, p50/p99. A table with ratios against the empty task, the goals
(met/not met, never a failure) and ``benchmarks/results/deployment-latest.json``. It fails only when
the benchmark breaks (the harness does not start, a DAG run fails or does not end), never because
something is slow.

``--airflow-setting workers.min_heartbeat_interval=1`` (repeatable) sets an Airflow option on every
component, recorded with the results.

``--quick`` (``make test``): a dry check, no deployment: the DAG file parses at N=3 with a DAG per
available variant.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DAGS = HERE / "deployment_dags"
RESULTS = HERE / "results"
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="noxus-bench-deploy-airflow-"))
# As in the deployment: Airflow's example plugins register a listener, and with a listener Airflow
# refuses any task with end_from_trigger=True (the sensor started from the triggerer) at parse time.
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path[:0] = [str(HERE), str(REPO / "tests")]
# The DAG file imports deployment_variants: every component finds it on its path.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))

import deployment_variants as dv  # noqa: E402
from deployment_measure import (  # noqa: E402
    TaskOutcome,
    WorkerExecutions,
    cpu_sample,
    dag_run_row,
    task_outcomes,
    task_state_counts,
)
from deployment_report import goals, table  # noqa: E402
from run_all import measured_commit  # noqa: E402
from trigger_scale import percentile  # noqa: E402

import airflow_provider_noxus  # noqa: E402
from airflow_provider_noxus import protocol  # noqa: E402
from airflow_provider_noxus.run_list import run_finished_at  # noqa: E402

API_KEY = "nxk-bench-deployment-key"
COMPONENTS = ("api-server", "scheduler-1", "triggerer-1", "worker-1")
WORKER = "worker-1"
#: Seconds to let the deployment settle after start-up, then to measure its idle CPU rate.
SETTLE_S, IDLE_S = 10.0, 20.0
#: Seconds after a DAG run ends before the variant's last CPU sample (the worker's trailing work).
TAIL_S = 3.0
#: A DAG run none of whose tasks changed state for this long is stuck (a stalled component): the
#: benchmark stops and says so instead of waiting for its whole bound.
STALLED_S = 180.0


def create_runs(emulator: Any, workflow_id: str, count: int, seconds: float) -> list[str]:
    """Start ``count`` runs through the public API (the sensor variant's), return their ids."""
    body = json.dumps(protocol.create_run_body({"seconds": seconds})).encode()
    run_ids = []
    for _ in range(count):
        request = urllib.request.Request(
            f"{emulator.url}/v1/workflows/{workflow_id}/runs",
            data=body,
            method="POST",
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            run_ids.append(str(json.loads(response.read())["id"]))
    return run_ids


class Bench:
    """One deployment and emulator, the variants run on them in turn.

    :param airflow: the started :class:`~support.distributed_airflow.DistributedAirflowDeployment`.
    :param emulator: the started emulator.
    :param tasks: N, tasks per variant.
    :param run_seconds: length of each Noxus run.
    :param slots: the worker's task slots.
    """

    def __init__(self, airflow: Any, emulator: Any, tasks: int, run_seconds: float, slots: int) -> None:
        self.airflow, self.emulator = airflow, emulator
        self.tasks, self.run_seconds, self.slots = tasks, run_seconds, slots
        self.workflow_id = emulator.control.workflow_id("slow")
        self.roots = {name: process.pid for name, process in airflow.processes.items()}
        self.roots.update({"postgresql": airflow.postgres.process.pid, "redis": airflow.redis.process.pid})
        self.idle_rates: dict[str, float] = {}

    def measure_idle(self, seconds: float) -> None:
        """The deployment's CPU per second with nothing to run: subtracted from every variant."""
        before, started = cpu_sample(self.roots), time.monotonic()
        time.sleep(seconds)
        after, elapsed = cpu_sample(self.roots), time.monotonic() - started
        self.idle_rates = {name: (after[name] - before[name]) / elapsed for name in self.roots}

    def warm_up(self) -> str:
        """Run the warm-up DAG to its end; its state."""
        return str(self.wait_for_end(dv.WARM_UP_DAG_ID, self.airflow.trigger_dag(dv.WARM_UP_DAG_ID))["state"])

    def wait_for_end(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Wait until the DAG run succeeds or fails (bounded); its row.

        :raises RuntimeError: when it has not ended after :meth:`finish_timeout` seconds, or when no
            task instance of it changed state for :data:`STALLED_S` (a component stuck).
        """
        started = time.monotonic()
        deadline = started + self.finish_timeout()
        counts, changed_at = task_state_counts(self.airflow, dag_id, run_id), started
        while (row := dag_run_row(self.airflow, dag_id, run_id))["state"] not in ("success", "failed"):
            now = time.monotonic()
            if (latest := task_state_counts(self.airflow, dag_id, run_id)) != counts:
                counts, changed_at = latest, now
            if now > deadline or now - changed_at > STALLED_S:
                why = "not finished" if now > deadline else f"no task changed state for {STALLED_S:.0f} s"
                raise RuntimeError(
                    f"{dag_id} run {run_id}: {why} after {now - started:.0f} s, "
                    f"tasks by state {counts}; see the components' logs in {self.airflow.log_dir}"
                )
            self.airflow.check_running()
            time.sleep(1.0)
        return row

    def finish_timeout(self) -> float:
        """A generous bound on one variant: every task twice through the slots, run included, x3."""
        return 120.0 + 3 * 2 * self.tasks * (self.run_seconds + 6.0) / self.slots

    def run(self, variant: dv.Variant) -> dict[str, Any]:
        """Run one variant to its end; its measurements (see the module docstring)."""
        airflow, tasks = self.airflow, self.tasks
        conf: dict[str, Any] = {}
        if variant.runs_from_driver:
            conf["runs"] = create_runs(self.emulator, self.workflow_id, tasks, self.run_seconds)
        log_offset = airflow.log_path(WORKER).stat().st_size
        before, started = cpu_sample(self.roots), time.monotonic()
        run_id = airflow.trigger_dag(variant.dag_id, conf)
        row = self.wait_for_end(variant.dag_id, run_id)
        time.sleep(TAIL_S)
        after, elapsed = cpu_sample(self.roots), time.monotonic() - started
        with airflow.log_path(WORKER).open("rb") as log:
            log.seek(log_offset)
            worker = WorkerExecutions.from_log(log.read().decode(errors="replace"), airflow.task_log_dir)

        outcomes = task_outcomes(airflow, variant.dag_id, run_id, variant.run_xcom_key)
        if variant.runs_from_driver:
            prefix = dv.SENSOR_TASK_PREFIX
            outcomes = [
                replace(outcome, noxus_run=conf["runs"][int(outcome.key.removeprefix(prefix))])
                for outcome in outcomes
            ]
        ends = [outcome.end for outcome in outcomes if outcome.end is not None]
        raw = {name: after[name] - before[name] for name in self.roots}
        above_idle = {name: raw[name] - self.idle_rates.get(name, 0.0) * elapsed for name in self.roots}
        to_success = self.run_end_to_success(outcomes) if variant.noxus else []
        return {
            "variant": variant.name,
            "label": variant.label,
            "dag_run_state": row["state"],
            "tasks": tasks,
            "succeeded": sum(outcome.state == "success" for outcome in outcomes),
            "retried": sum(outcome.try_number > 1 for outcome in outcomes),
            "makespan_s": round((max(ends) - row["queued_at"]).total_seconds(), 1) if ends else None,
            "window_s": round(elapsed, 1),
            "cpu_ms_per_task": round(1000 * sum(above_idle.values()) / tasks),
            "cpu_raw_ms_per_task": round(1000 * sum(raw.values()) / tasks),
            "cpu_ms_per_task_by_component": {n: round(1000 * s / tasks) for n, s in above_idle.items()},
            "worker_task_starts": worker.starts,
            "worker_slot_s_per_task": round(worker.slot_seconds / tasks, 2),
            "slot_held_after_task_end_s_per_task": round(sum(worker.held_after_end) / tasks, 2),
            "task_ends_held_1s_or_more": sum(held >= 1.0 for held in worker.held_after_end),
            "to_success_p50_s": rounded(statistics.median(to_success) if to_success else None),
            "to_success_p99_s": rounded(percentile(to_success, 0.99)),
            "to_success_max_s": rounded(max(to_success, default=None)),
        }

    def run_end_to_success(self, outcomes: list[TaskOutcome]) -> list[float]:
        """Seconds from each Noxus run's end to its task's success."""
        seconds = []
        for outcome in outcomes:
            if outcome.state != "success" or outcome.noxus_run is None or outcome.end is None:
                continue
            finished = run_finished_at(self.emulator.control.run(outcome.noxus_run))
            if finished is not None:
                seconds.append(outcome.end.timestamp() - finished)
        return seconds


def airflow_setting_env(settings: dict[str, str]) -> dict[str, str]:
    """``{"workers.min_heartbeat_interval": "1"}`` as Airflow reads it from the environment."""
    return {f"AIRFLOW__{option.replace('.', '__', 1).upper()}": value for option, value in settings.items()}


def parse_setting(text: str) -> tuple[str, str]:
    """``section.key=value`` -> ``("section.key", "value")``."""
    option, equals, value = text.partition("=")
    section, dot, key = option.partition(".")
    if not (equals and dot and section and key):
        raise argparse.ArgumentTypeError(f"expected section.key=value, got {text!r}")
    return option, value


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def dry_check(tasks: int = 3) -> int:
    """Parse the DAG file at N=``tasks``: a DAG, with its tasks, for every variant this build can run."""
    from airflow.dag_processing.dagbag import DagBag

    os.environ[dv.TASKS_VARIABLE] = str(tasks)
    bag = DagBag(str(DAGS))
    problems = [f"import error in {path}: {error}" for path, error in bag.import_errors.items()]
    if dv.WARM_UP_DAG_ID not in bag.dags:
        problems.append(f"no DAG {dv.WARM_UP_DAG_ID}")
    for variant in dv.VARIANTS:
        if not dv.available(variant):
            print(f"  {variant.name}: {dv.unavailable_reason(variant)}")
            continue
        dag = bag.dags.get(variant.dag_id)
        count = len(dag.tasks) if dag else 0
        expected = tasks if variant.name == "sensor_triggerer" else 1
        print(f"  {variant.name}: DAG {variant.dag_id}, {count} task(s)")
        if count != expected:
            problems.append(f"{variant.dag_id}: {count} tasks, expected {expected}")
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


def run_benchmark(
    tasks: int,
    run_seconds: float,
    slots: int,
    names: list[str],
    idle_s: float,
    worker_preload: bool = False,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start the deployment and the emulator, warm it up, run the variants, stop everything (by PID, on
    every exit path); the rows and what they were measured on.

    :param settings: Airflow options for every component, ``{"workers.min_heartbeat_interval": "1"}``.
    """
    from support.distributed_airflow import DistributedAirflowDeployment

    from airflow_provider_noxus.emulator import EmulatorServer

    variants = [dv.VARIANTS_BY_NAME[name] for name in names]
    skipped = {
        variant.name: dv.unavailable_reason(variant) for variant in variants if not dv.available(variant)
    }
    home = Path(tempfile.mkdtemp(prefix="noxus-bench-deployment-"))
    rows, started = [], time.monotonic()
    with EmulatorServer(api_keys=[API_KEY], allow_loopback_urls=True) as emulator:
        env = {
            "AIRFLOW_CONN_NOXUS_DEFAULT": json.dumps(
                {"conn_type": "noxus", "host": emulator.url, "password": API_KEY}
            ),
            dv.TASKS_VARIABLE: str(tasks),
            dv.SECONDS_VARIABLE: str(run_seconds),
            dv.WORKFLOW_VARIABLE: emulator.control.workflow_id("slow"),
        }
        env.update(airflow_setting_env(settings or {}))
        if worker_preload:
            env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = (
                "airflow_provider_noxus.worker_preload.CELERY_CONFIG"
            )
        with DistributedAirflowDeployment(
            home / "airflow", DAGS, env, components=COMPONENTS, worker_concurrency=slots, startup_timeout=300
        ) as airflow:
            print(
                f"deployment up in {time.monotonic() - started:.0f} s; logs in {airflow.log_dir}", flush=True
            )
            bench = Bench(airflow, emulator, tasks, run_seconds, slots)
            print(f"warm-up DAG: {bench.warm_up()}", flush=True)
            time.sleep(SETTLE_S)
            bench.measure_idle(idle_s)
            idle = {name: round(1000 * rate) for name, rate in bench.idle_rates.items()}
            print(f"idle CPU, ms per second: {idle}", flush=True)
            for variant in variants:
                if variant.name in skipped:
                    print(f"{variant.name}: {skipped[variant.name]}", flush=True)
                    continue
                print(f"{variant.name}: {tasks} tasks ...", flush=True)
                rows.append(bench.run(variant))
                print(f"  {json.dumps(rows[-1])}", flush=True)
    return {
        "rows": rows,
        "skipped": skipped,
        "idle_cpu_ms_per_s": idle,
        "seconds": round(time.monotonic() - started),
    }


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (``timeout``, a CI cancel) leaves like Ctrl-C: the deployment and the emulator stop."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a dry check (the DAG file parses), no deployment"
    )
    parser.add_argument("--tasks", type=int, default=200, help="N, tasks per variant (default 200)")
    parser.add_argument("--run-seconds", type=float, default=3.0, help="length of each Noxus run (default 3)")
    parser.add_argument("--slots", type=int, default=4, help="the worker's task slots (default 4)")
    parser.add_argument(
        "--idle-seconds", type=float, default=IDLE_S, help="idle CPU measurement (default 20)"
    )
    parser.add_argument(
        "--worker-preload",
        action="store_true",
        help="the Celery worker imports airflow_provider_noxus.worker_preload at start-up",
    )
    parser.add_argument(
        "--airflow-setting",
        type=parse_setting,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="an Airflow option for every component (repeatable), e.g. workers.min_heartbeat_interval=1",
    )
    parser.add_argument("--variants", default=",".join(v.name for v in dv.VARIANTS), help="comma-separated")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default benchmarks/results)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        print("deployment cost, dry check (the DAG file at N=3):", flush=True)
        return dry_check()
    names = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(names) - set(dv.VARIANTS_BY_NAME))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose among {sorted(dv.VARIANTS_BY_NAME)}")
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    # An installed provider is compiled at install; an editable one under PYTHONDONTWRITEBYTECODE (set
    # on our machines) would be compiled again by every task process (~90 ms of CPU each).
    compileall.compile_dir(Path(airflow_provider_noxus.__file__).parent, quiet=1)
    load_before, commit = os.getloadavg(), measured_commit()
    print(
        f"=== deployment cost: {args.tasks} tasks per variant, runs of {args.run_seconds:g} s, "
        f"one worker with {args.slots} slots{', the provider preloaded' if args.worker_preload else ''} ===\n"
        f"NOTE: the sensor variant is {args.tasks} unmapped "
        "sensors: Airflow 3.3 never starts a mapped task from the triggerer.",
        flush=True,
    )
    settings = dict(args.airflow_setting)
    if settings:
        print(f"Airflow settings on every component: {settings}", flush=True)
    measured = run_benchmark(
        args.tasks, args.run_seconds, args.slots, names, args.idle_seconds, args.worker_preload, settings
    )
    rows = measured["rows"]
    print(
        "\nCPU per task above idle (ms; raw = idle included), whole deployment, then by component:\n"
        + table(rows)
    )
    for name, reason in measured["skipped"].items():
        print(f"{name}: {reason}")
    judged = goals(rows, args.run_seconds)
    print("\nGoals (issue 22), against the empty task of this run:")
    for goal in judged:
        print(goal.line())
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "provider": str(Path(airflow_provider_noxus.__file__).parent),
        "plan": {
            "tasks": args.tasks,
            "run_seconds": args.run_seconds,
            "slots": args.slots,
            "variants": names,
            "worker_preload": args.worker_preload,
            "airflow_settings": settings,
        },
        **measured,
        "goals": [{"goal": goal.text, "measured": goal.measured, "met": goal.met} for goal in judged],
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "cores": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / (
        "deployment"
        + ("-worker-preload" if args.worker_preload else "")
        + ("-airflow-settings" if settings else "")
        + "-latest.json"
    )
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nresults in {out} ({measured['seconds']} s in all)")
    broken = [row["variant"] for row in rows if row["dag_run_state"] != "success"]
    if broken:
        print(f"FAILED (a DAG run failed, not slowness): {', '.join(broken)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
