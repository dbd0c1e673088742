"""Waiting on thousands of Noxus runs in one process: our trigger against the alternatives.

The emulator runs in its own process (and, for ``HttpSensorTrigger``, the status proxy of
:mod:`status_proxy` in another); each case runs in a fresh driver process (:mod:`trigger_driver`)
against the same workload: N runs of the emulator's ``slow`` workflow (or of its copies, for runs
spread over several workflows) whose lengths are drawn uniformly from a span (the same draw for every
case of one N), so that they end at random times. Runs *arrive* as a fan-out's do: each is created
and handed to the driver at once, which starts its waiter, one by one over ``spread`` seconds, or all
at once for a burst (created first, then handed over together). What each row holds:

- ``api_requests``: requests the emulator answered to the waiters, from its counters: ``list_pages``
  (``GET /v1/workflows/{wid}/runs``), ``run_reads`` (``GET /v1/runs/{id}`` and
  ``GET /v1/workflows/{wid}/runs/{id}``) and ``stream_requests``; ``watcher_pages_read`` and
  ``watcher_runs_read`` are the shared watchers' own counts, ``watchers_peak`` the most alive at once;
- ``requests_per_run_interval``: ``api_requests`` / (the time each run was waited on, from its
  waiter's start to its event, summed, in poll intervals); ``requests_per_interval`` is that times
  N; ``request_windows``: the requests of each interval (the emulator's counters sampled every
  interval), the runs waited on and the waits that ended in it; ``requests_peak_per_interval`` and
  ``request_allowance_max_ratio`` (the worst interval against N/50 plus the waits that ended in it);
- ``cpu_s``: user+sys CPU of the driver process from the first arrival to the last event;
  ``cpu_per_run_ms`` (per waiting run), ``cpu_per_run_minute_ms`` (per minute of waiting) and
  ``cpu_per_request_us`` divide it; ``cpu_steady_per_run_interval_us`` and
  ``requests_steady_per_run_interval`` are the same after the start window (the last arrival plus
  two intervals), and ``cpu_start_per_run_ms`` is the start window's CPU beyond that steady rate, per
  run (starting a waiter);
- ``rss_per_run_kb``: (peak RSS - RSS before the first waiter) / N;
- ``lag_*_ms``: how late a 0.1 s sleep woke on the driver's loop; ``start_lag_*_ms`` the same from
  the first arrival to two intervals after the last; ``lag_spikes_ms``: [seconds since the
  measurement began, lag] of each lag over 50 ms; ``blocked_warnings``: the triggerer watchdog's
  warnings (a stall over 0.2 s); ``full_gc_*``: full garbage collections and the longest;
  ``gc_ms_by_generation``: the (wall) time spent in collections of each generation, ``gc_s`` its sum;
- ``wake_*_ms``: from the run's ``finished_at`` (emulator clock, same machine) to the event;
- ``connections_opened``: TCP connections the driver opened; ``peak_fds``: its open files at peak;
- ``errors``: failed waits, non-2xx answers from the emulator, unreadable upstream reads of the proxy.

Used by ``benchmarks/run_all.py``; run alone with ``python benchmarks/trigger_scale.py --config
poll_shared --config raw_shared --n 1000 [--workflows 10] [--burst]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).resolve().parent
API_KEY = "noxus-bench-key"
ADMIN_TOKEN = "noxus-bench-admin"
#: Configuration key -> label.
CONFIG_LABELS = {
    "poll_shared": "NoxusRunTrigger poll, shared status checks",
    "poll_per_run": "NoxusRunTrigger poll, one read per run",
    "raw_shared": "raw loop, one shared aiohttp session",
    "http_sensor": "HttpSensorTrigger (providers-http)",
    "stream": "NoxusRunTrigger stream",
    "auto": "NoxusRunTrigger auto",
    "session_per_check": "new aiohttp session per check",
}
#: ``Case.workflows`` for one workflow per run: every run has a watcher of its own.
EACH = 0
#: Endpoints of the API a waiter may call, by what they are.
LIST_ENDPOINTS = ("list_runs",)
RUN_READ_ENDPOINTS = ("get_run_status", "get_run")
STREAM_ENDPOINTS = ("run_events",)
API_ENDPOINTS = LIST_ENDPOINTS + RUN_READ_ENDPOINTS + STREAM_ENDPOINTS
#: The workflow every run of a one-workflow case belongs to; the others are copies of it.
BASE_WORKFLOW = "slow"
#: Concurrent requests of the orchestrator when it creates runs and reads their end times.
SETUP_CONCURRENCY = 50
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Case:
    """One measurement: a configuration at N waiting runs.

    :param config: a key of :data:`CONFIG_LABELS`.
    :param n: runs waited on.
    :param workflows: how many workflows the runs are spread over (round robin), :data:`EACH` for one
        workflow per run.
    :param burst: the runs arrive at once (a fan-out: created, then every trigger starts within about a
        second), else one by one, spread evenly over the plan's ``spread``.
    """

    config: str
    n: int
    workflows: int = 1
    burst: bool = False

    @property
    def workflow_count(self) -> int:
        return self.n if self.workflows == EACH else self.workflows

    @property
    def series(self) -> tuple[str, int, bool]:
        """What the case measures whatever its N (a line of the chart)."""
        return (self.config, self.workflows, self.burst)

    @property
    def workflows_text(self) -> str:
        return "each" if self.workflows == EACH else str(self.workflows)

    @property
    def label(self) -> str:
        label = CONFIG_LABELS[self.config]
        if self.workflows == EACH:
            label += ", one workflow per run"
        elif self.workflows > 1:
            label += f", {self.workflows} workflows"
        return label + (", burst" if self.burst else "")

    def __str__(self) -> str:
        return f"{self.label}, N={self.n:,}"


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures.

    :param cases: the cases, in order.
    :param run_seconds: the span the run lengths are drawn from.
    :param interval: seconds between two status checks of one waiter.
    :param spread: seconds over which the runs of a case that is not a burst arrive.
    :param profile_dir: sample each driver with py-spy into this directory (collapsed stacks, CPU only).
    :param gc_freeze: move everything the driver imported out of the garbage collector's reach first.
    :param gc_off: no garbage collection in the drivers (a diagnostic: what collections cost).
    :param count_objects: count the collector's objects per waiting run (a diagnostic: costs CPU once).
    """

    cases: tuple[Case, ...]
    run_seconds: tuple[float, float]
    interval: float
    spread: float
    seed: int = 20261128
    profile_dir: Path | None = None
    gc_freeze: bool = False
    gc_off: bool = False
    count_objects: bool = False


def admin_request(base_url: str, method: str, path: str) -> Any:
    request = urllib.request.Request(
        base_url + path, method=method, headers={"X-Emulator-Admin-Token": ADMIN_TOKEN}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


def startup_failure(what: str, pattern: str, log_path: Path) -> RuntimeError:
    tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
    return RuntimeError(f"{what} did not start (no line matching {pattern!r}); its output ends with:\n{tail}")


def read_line_until(stream: IO[str], pattern: str, what: str, log_path: Path) -> re.Match[str]:
    """Read a child's stdout until a line matches ``pattern``; fail with the child's log if it ends."""
    for line in stream:
        match = re.search(pattern, line)
        if match:
            return match
    raise startup_failure(what, pattern, log_path)


def wait_for_log_line(
    process: subprocess.Popen[str], log_path: Path, pattern: str, what: str
) -> re.Match[str]:
    """Wait until a line of the child's log matches ``pattern``; fail if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(pattern, log_path.read_text(errors="replace"), re.MULTILINE)
        if match:
            return match
        time.sleep(0.1)
    raise startup_failure(what, pattern, log_path)


@contextlib.contextmanager
def child_process(args: list[str], log_path: Path, *, talk: bool = False) -> Iterator[subprocess.Popen[str]]:
    """A child process writing to ``log_path``, stopped by PID on exit.

    :param talk: pipe its stdin and stdout (else both go to the log, so it never blocks on a full pipe).
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talk else log,
            stderr=log,
            text=True,
            cwd=HERE.parent,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def workflow_names(count: int) -> list[str]:
    """The names of the ``count`` workflows a case spreads its runs over: ``slow`` and its copies."""
    return [BASE_WORKFLOW] + [f"{BASE_WORKFLOW}-copy-{index:05d}" for index in range(1, count)]


def write_workflow_copies(count: int, path: Path) -> None:
    """A workflows file for the emulator (``--workflows``) with ``count - 1`` copies of ``slow``, each
    with its own name (so its own id)."""
    builtin = json.loads(
        (resources.files("airflow_provider_noxus.emulator") / "builtin_workflows.json").read_text()
    )
    workflows = builtin["workflows"] if isinstance(builtin, dict) else builtin
    base = dict(next(workflow for workflow in workflows if workflow["name"] == BASE_WORKFLOW))
    base.pop("id", None)
    path.write_text(json.dumps([{**base, "name": name} for name in workflow_names(count)[1:]]))


@contextlib.contextmanager
def emulator_process(workdir: Path, workflows: int) -> Iterator[str]:
    """The emulator in its own process on a free loopback port, with ``workflows`` copies of ``slow``
    (``slow`` included); yields its base URL."""
    log_path = workdir / "emulator.log"
    args = [sys.executable, "-m", "airflow_provider_noxus.emulator", "--port", "0"]
    args += ["--api-key", API_KEY, "--admin-token", ADMIN_TOKEN]
    if workflows > 1:
        copies = workdir / "workflows.json"
        write_workflow_copies(workflows, copies)
        args += ["--workflows", str(copies)]
    with child_process(args, log_path) as process:
        yield wait_for_log_line(process, log_path, r"(http://127\.0\.0\.1:\d+)", "the emulator").group(1)


@contextlib.contextmanager
def status_proxy_process(emulator_url: str, workdir: Path) -> Iterator[str]:
    """The 404-until-final proxy of ``http_sensor`` in its own process; yields its base URL."""
    log_path = workdir / "status_proxy.log"
    args = [sys.executable, str(HERE / "status_proxy.py"), "--emulator-url", emulator_url]
    args += ["--api-key", API_KEY]
    with child_process(args, log_path) as process:
        port = wait_for_log_line(process, log_path, r"^ready (\d+)", "the status proxy").group(1)
        yield f"http://127.0.0.1:{port}"


def send_lines(driver: subprocess.Popen[str], lines: list[str]) -> None:
    """Write JSON lines to the driver's stdin (it reads them as they come)."""
    assert driver.stdin is not None
    driver.stdin.write("".join(line + "\n" for line in lines))
    driver.stdin.flush()


async def deliver_runs(
    case: Case, plan: Plan, emulator_url: str, workflow_ids: list[str], driver: subprocess.Popen[str]
) -> list[str]:
    """Create the case's runs (run ``i`` in ``workflow_ids[i]``, lengths drawn from the plan) and hand
    each to the driver as soon as it exists: one by one over ``plan.spread`` seconds, or, for a burst,
    all of them at once after creating them. Their ids, in order."""
    draw = random.Random(plan.seed + case.n)
    lengths = [draw.uniform(*plan.run_seconds) for _ in range(case.n)]
    run_ids = [""] * case.n
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    async with aiohttp.ClientSession(base_url=emulator_url, headers={"X-API-Key": API_KEY}) as session:

        async def create(index: int) -> str:
            body = {"input": {"seconds": round(lengths[index], 3)}}
            async with (
                limit,
                session.post(f"/v1/workflows/{workflow_ids[index]}/runs", json=body) as response,
            ):
                response.raise_for_status()
                run_ids[index] = str((await response.json())["id"])
            return json.dumps([run_ids[index], workflow_ids[index]])

        if case.burst:
            send_lines(driver, list(await asyncio.gather(*(create(index) for index in range(case.n)))))
            return run_ids

        async def create_and_send(index: int) -> None:
            send_lines(driver, [await create(index)])

        loop = asyncio.get_running_loop()
        began = loop.time()
        creating = []
        for index in range(case.n):
            delay = began + plan.spread * index / case.n - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            creating.append(asyncio.create_task(create_and_send(index)))
        await asyncio.gather(*creating)
    return run_ids


async def sample_requests(emulator_url: str, every: float, samples: list[tuple[float, int]]) -> None:
    """Append (epoch seconds, API requests answered so far) every ``every`` seconds, until cancelled."""
    headers = {"X-Emulator-Admin-Token": ADMIN_TOKEN}
    async with aiohttp.ClientSession(base_url=emulator_url, headers=headers) as session:
        while True:
            async with session.get("/_emulator/counters") as response:
                requests = (await response.json())["requests"]
            samples.append((time.time(), sum(sum(requests.get(e, {}).values()) for e in API_ENDPOINTS)))
            await asyncio.sleep(every)


async def feed_driver(
    case: Case, plan: Plan, emulator_url: str, workflow_ids: list[str], driver: subprocess.Popen[str]
) -> tuple[list[str], list[tuple[float, int]]]:
    """Start the driver's measurement, hand it the runs, count the API requests every interval until
    it exits; the run ids and the request samples."""
    assert driver.stdout is not None
    samples: list[tuple[float, int]] = []
    send_lines(driver, [json.dumps({"n": case.n})])
    sampler = asyncio.create_task(sample_requests(emulator_url, plan.interval, samples))
    try:
        run_ids = await deliver_runs(case, plan, emulator_url, workflow_ids, driver)
        await asyncio.to_thread(driver.stdout.read)  # until it exits (it prints nothing more; py-spy may)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return run_ids, samples


async def read_runs(emulator_url: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """Each run as the emulator's control API shows it (not counted as an API request)."""
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    headers = {"X-Emulator-Admin-Token": ADMIN_TOKEN}
    async with aiohttp.ClientSession(base_url=emulator_url, headers=headers) as session:

        async def read(run_id: str) -> dict[str, Any]:
            async with limit, session.get(f"/_emulator/runs/{run_id}") as response:
                response.raise_for_status()
                return dict(await response.json())

        return list(await asyncio.gather(*(read(run_id) for run_id in run_ids)))


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def run_case(
    case: Case, plan: Plan, emulator_url: str, proxy_url: str | None, workdir: Path
) -> dict[str, Any]:
    """One case: a fresh driver process against a reset emulator; one result row."""
    admin_request(emulator_url, "POST", "/_emulator/reset")
    ids_by_name = admin_request(emulator_url, "GET", "/_emulator/workflows")
    names = workflow_names(case.workflow_count)
    workflow_ids = [ids_by_name[names[index % len(names)]] for index in range(case.n)]
    # Beyond the longest run: creating the runs (slow on a busy machine) and a margin.
    give_up_after = plan.run_seconds[1] + plan.spread + 3 * plan.interval + 120 + case.n / 100
    name = f"{case.config}-{case.workflows_text}wf-{'burst' if case.burst else 'spread'}-{case.n}"
    log_path = workdir / f"driver-{name}.log"
    result_path = workdir / f"driver-{name}.json"
    args = [sys.executable, str(HERE / "trigger_driver.py"), "--config", case.config]
    args += ["--emulator-url", emulator_url, "--api-key", API_KEY, "--interval", str(plan.interval)]
    args += ["--give-up-after", str(give_up_after), "--result-file", str(result_path)]
    if proxy_url:
        args += ["--proxy-url", proxy_url]
    args += ["--gc-freeze"] if plan.gc_freeze else []
    args += ["--gc-off"] if plan.gc_off else []
    args += ["--count-objects"] if plan.count_objects else []
    if plan.profile_dir is not None:
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        profile = str(plan.profile_dir / f"{name}.txt")
        args = [py_spy, "record", "--gil", "--format", "raw", "--rate", "250", "-o", profile, "--", *args]
    with child_process(args, log_path, talk=True) as driver:
        assert driver.stdout is not None
        read_line_until(driver.stdout, r"^ready$", f"the {case.config} driver", log_path)
        run_ids, samples = asyncio.run(feed_driver(case, plan, emulator_url, workflow_ids, driver))
        driver.wait(timeout=60)
    if driver.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"the driver of {case} failed (exit {driver.returncode}); its stderr ends with:\n{tail}"
        )
    driven = json.loads(result_path.read_text())
    counters = admin_request(emulator_url, "GET", "/_emulator/counters")
    proxy_errors = 0
    if proxy_url:
        proxy_errors = int(admin_request(proxy_url, "GET", "/_proxy/counters")["upstream_errors"])
    runs = asyncio.run(read_runs(emulator_url, run_ids))
    return summarize(case, plan, driven, counters, runs, samples, proxy_errors)


def request_windows(
    samples: list[tuple[float, int]], starts: dict[str, float], ends: dict[str, float]
) -> list[dict[str, float]]:
    """Each span between two request samples in which some run was waited on: its requests, the runs
    waited on during it and the runs whose wait ended in it."""
    windows = []
    for (began, before), (ended, after) in itertools.pairwise(samples):
        waiting = sum(
            1 for run_id, start in starts.items() if start < ended and ends.get(run_id, math.inf) > began
        )
        if waiting:
            finished = sum(1 for end in ends.values() if began <= end < ended)
            windows.append(
                {
                    "seconds": ended - began,
                    "requests": after - before,
                    "waiting": waiting,
                    "finished": finished,
                }
            )
    return windows


def start_and_steady(
    driven: dict[str, Any],
    plan: Plan,
    starts: dict[str, float],
    ends: dict[str, float],
    samples: list[tuple[float, int]],
) -> dict[str, float | None]:
    """The wait split at the end of the start window (the last arrival plus two intervals): CPU and API
    requests per waiting run per interval after it (the steady wait), and the CPU of the start window
    beyond that steady rate, per run (what starting a waiter costs: Airflow's trigger start, the
    connection, the first read)."""
    window_s = driven["start_window_s"]
    split_at = driven["began_epoch"] + window_s
    cpu_at_split = max((used for at, used in driven["cpu_samples"] if at <= window_s), default=0.0)

    def run_intervals(since: float, until: float) -> float:
        spans = (min(ends.get(run_id, until), until) - max(start, since) for run_id, start in starts.items())
        return sum(max(0.0, span) for span in spans) / plan.interval

    steady_run_intervals = run_intervals(split_at, math.inf)
    if steady_run_intervals < len(starts):  # less than an interval per run after the start: no steady wait
        return dict.fromkeys(
            ("cpu_steady_per_run_interval_us", "cpu_start_per_run_ms", "requests_steady_per_run_interval")
        )
    rate = (float(driven["cpu_s"]) - cpu_at_split) / steady_run_intervals
    start_cpu = cpu_at_split - rate * run_intervals(-math.inf, split_at)
    steady = [
        (began, ended, after - before) for (began, before), (ended, after) in itertools.pairwise(samples)
    ]
    steady = [window for window in steady if window[0] >= split_at]
    requests = None
    if steady:
        requests = sum(count for _, _, count in steady) / run_intervals(steady[0][0], steady[-1][1])
    return {
        "cpu_steady_per_run_interval_us": round(rate * 1e6, 1),
        "cpu_start_per_run_ms": round(start_cpu / len(starts) * 1e3, 3),
        "requests_steady_per_run_interval": None if requests is None else round(requests, 4),
    }


def summarize(
    case: Case,
    plan: Plan,
    driven: dict[str, Any],
    counters: dict[str, Any],
    runs: list[dict[str, Any]],
    samples: list[tuple[float, int]],
    proxy_errors: int,
) -> dict[str, Any]:
    """The result row of one case, from the driver's measurements and the emulator's view."""
    requests: dict[str, dict[str, int]] = counters.get("requests", {})

    def answered(endpoints: tuple[str, ...]) -> int:
        return sum(sum(requests.get(endpoint, {}).values()) for endpoint in endpoints)

    list_pages, run_reads = answered(LIST_ENDPOINTS), answered(RUN_READ_ENDPOINTS)
    api_requests = list_pages + run_reads + answered(STREAM_ENDPOINTS)
    http_errors = sum(
        count
        for endpoint in API_ENDPOINTS
        for status, count in requests.get(endpoint, {}).items()
        if not status.startswith("2")
    )
    starts: dict[str, float] = driven["starts"]
    ends = {run_id: event[0] for run_id, event in driven["events"].items()}
    waited_s = sum(ends[run_id] - start for run_id, start in starts.items() if run_id in ends)
    run_intervals = waited_s / plan.interval
    windows = request_windows(samples, starts, ends)
    phases = start_and_steady(driven, plan, starts, ends, samples)
    # The allowance: N/50 requests per interval, plus one per run whose wait ended then.
    allowance = [case.n / 50 * window["seconds"] / plan.interval + window["finished"] for window in windows]
    wakes_ms = [
        (ends[run["id"]] - parse_time(run["finished_at"])) * 1000
        for run in runs
        if run["id"] in ends and run.get("finished_at")
    ]
    unfinished = sum(1 for run in runs if run.get("status") != "completed")
    cpu_s = float(driven["cpu_s"])
    n = case.n
    wake_p50, wake_p99 = percentile(wakes_ms, 0.5), percentile(wakes_ms, 0.99)

    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "config": case.config,
        "label": CONFIG_LABELS[case.config],
        "series": case.label,
        "workflows": case.workflows_text,
        "arrival": "burst" if case.burst else "spread",
        "n": n,
        "interval_s": plan.interval,
        "run_seconds": list(plan.run_seconds),
        "arrival_s": round(driven["arrival_s"], 2),
        "api_requests": api_requests,
        "list_pages": list_pages,
        "run_reads": run_reads,
        "stream_requests": api_requests - list_pages - run_reads,
        "watcher_pages_read": driven["watcher_pages_read"],
        "watcher_runs_read": driven["watcher_runs_read"],
        "watchers_peak": driven["watchers_peak"],
        "run_minutes": round(waited_s / 60, 1),
        "requests_per_run_interval": rounded(api_requests / run_intervals if run_intervals else None, 4),
        "requests_per_interval": rounded(api_requests / run_intervals * n if run_intervals else None, 1),
        "requests_peak_per_interval": max(
            (round(w["requests"] * plan.interval / w["seconds"]) for w in windows), default=None
        ),
        "request_allowance_max_ratio": max(
            (round(w["requests"] / limit, 3) for w, limit in zip(windows, allowance, strict=True) if limit),
            default=None,
        ),
        "request_windows": windows,
        "cpu_s": round(cpu_s, 3),
        "cpu_per_run_ms": round(cpu_s / n * 1e3, 3),
        "cpu_per_run_minute_ms": rounded(cpu_s * 1e3 / (waited_s / 60) if waited_s else None, 3),
        "cpu_per_request_us": rounded(cpu_s / api_requests * 1e6 if api_requests else None, 1),
        **phases,
        "rss_peak_mb": round(driven["rss_peak_kb"] / 1024, 1),
        "rss_per_run_kb": round((driven["rss_peak_kb"] - driven["rss_before_kb"]) / n, 2),
        "lag_p50_ms": round(driven["lag_p50_ms"], 1),
        "lag_p99_ms": round(driven["lag_p99_ms"], 1),
        "lag_max_ms": round(driven["lag_max_ms"], 1),
        "start_window_s": round(driven["start_window_s"], 1),
        "start_lag_p99_ms": round(driven["start_lag_p99_ms"], 1),
        "start_lag_max_ms": round(driven["start_lag_max_ms"], 1),
        "blocked_warnings": driven["blocked_warnings"],
        "lag_spikes_ms": driven["lag_spikes_ms"],
        "objects_per_run": driven["objects_per_run"],
        "full_gc_count": driven["full_gc_count"],
        "full_gc_max_ms": round(driven["full_gc_max_ms"], 1),
        "gc_ms_by_generation": [round(ms) for ms in driven["gc_ms_by_generation"]],
        "gc_s": round(sum(driven["gc_ms_by_generation"]) / 1000, 2),
        "wake_p50_ms": rounded(wake_p50, 1),
        "wake_p99_ms": rounded(wake_p99, 1),
        "connections_opened": driven["connections_opened"],
        "peak_fds": driven["peak_fds"],
        "errors": driven["errors"] + http_errors + proxy_errors + unfinished,
        "error_examples": driven["error_examples"]
        + ([f"{http_errors} non-2xx answers from the emulator"] if http_errors else [])
        + ([f"{proxy_errors} unreadable upstream reads in the proxy"] if proxy_errors else [])
        + ([f"{unfinished} runs not completed"] if unfinished else []),
        "wall_s": round(driven["wall_s"], 1),
    }


def run_plan(plan: Plan, *, progress: IO[str] = sys.stdout) -> list[dict[str, Any]]:
    """Every case of ``plan`` against one emulator process; the result rows, each numbered by its
    series (``config_no``: configuration, workflows and arrival, in the plan's order)."""
    rows: list[dict[str, Any]] = []
    numbers: dict[tuple[str, int, bool], int] = {}
    workflows = max(case.workflow_count for case in plan.cases)
    with tempfile.TemporaryDirectory(prefix="noxus-bench-") as tmp:
        workdir = Path(tmp)
        with emulator_process(workdir, workflows) as emulator_url, contextlib.ExitStack() as proxies:
            proxy_url = None
            if any(case.config == "http_sensor" for case in plan.cases):
                proxy_url = proxies.enter_context(status_proxy_process(emulator_url, workdir))
            for case in plan.cases:
                print(f"  {case} ...", end=" ", file=progress, flush=True)
                started = time.monotonic()
                row = run_case(case, plan, emulator_url, proxy_url, workdir)
                row["config_no"] = numbers.setdefault(case.series, len(numbers) + 1)
                row["load_1min"] = round(os.getloadavg()[0], 2)
                took = time.monotonic() - started
                print(f"{took:.0f} s, {row['errors']} errors", file=progress, flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=list(CONFIG_LABELS), help="repeatable")
    parser.add_argument("--n", type=int, action="append", help="repeatable")
    parser.add_argument(
        "--workflows", type=int, default=1, help=f"workflows the runs are spread over ({EACH}: one per run)"
    )
    parser.add_argument("--burst", action="store_true", help="the runs arrive at once")
    parser.add_argument("--min-seconds", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles of the drivers")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the drivers after imports")
    parser.add_argument("--gc-off", action="store_true", help="no garbage collection in the drivers")
    parser.add_argument("--count-objects", action="store_true", help="count objects per run (diagnostic)")
    args = parser.parse_args(argv)
    configs = args.config or ["poll_shared", "raw_shared"]
    plan = Plan(
        cases=tuple(
            Case(config, n, workflows=args.workflows, burst=args.burst)
            for n in (args.n or [1000])
            for config in configs
        ),
        run_seconds=(args.min_seconds, args.max_seconds),
        interval=args.interval,
        spread=args.interval,
        profile_dir=args.profile,
        gc_freeze=args.gc_freeze,
        gc_off=args.gc_off,
        count_objects=args.count_objects,
    )
    rows = run_plan(plan)
    for row in rows:
        print(json.dumps({key: value for key, value in row.items() if key != "request_windows"}))
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
