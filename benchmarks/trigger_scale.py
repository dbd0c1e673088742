"""Waiting on thousands of Noxus runs in one process: our trigger against the alternatives.

The emulator runs in its own process (and, for ``HttpSensorTrigger``, the status proxy of
:mod:`status_proxy` in another); each configuration runs in a fresh driver process
(:mod:`trigger_driver`) against the same workload: N runs of the emulator's ``slow`` workflow whose
lengths are drawn uniformly from a span (the same draw for every configuration of one N), so that
they end at random times. What each row holds:

- ``checks``: status reads the emulator answered (``GET /v1/runs/{id}`` and
  ``GET /v1/workflows/{wid}/runs/{id}``, from its request counters); for ``stream`` they are the
  fallback polls, and ``stream_connections`` counts the event-stream requests;
- ``cpu_s``: user+sys CPU of the driver process while it waited; ``cpu_per_check_us`` and
  ``cpu_per_run_ms`` divide it;
- ``rss_per_run_kb``: (peak RSS - RSS before the first waiter) / N;
- ``lag_*_ms``: how late a 0.1 s sleep woke on the driver's loop; ``lag_spikes_ms``: [seconds
  since the first waiter started, lag] of each lag over 50 ms; ``blocked_warnings``: the triggerer
  watchdog's warnings (a stall over 0.2 s); ``full_gc_*``: full garbage collections and the longest;
- ``wake_*_ms``: from the run's ``finished_at`` (emulator clock, same machine) to the event;
- ``connections_opened``: TCP connections the driver opened; ``peak_fds``: its open files at peak;
- ``errors``: failed waits, non-2xx answers from the emulator, unreadable upstream reads of the proxy.

Used by ``benchmarks/run_all.py``; run alone with ``python benchmarks/trigger_scale.py --quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).resolve().parent
API_KEY = "noxus-bench-key"
ADMIN_TOKEN = "noxus-bench-admin"
#: Configuration key -> (number in the issue, label).
CONFIG_LABELS = {
    "poll": (1, "NoxusRunTrigger poll"),
    "stream": (2, "NoxusRunTrigger stream"),
    "raw_shared": (3, "raw loop, one shared aiohttp session"),
    "session_per_check": (4, "new aiohttp session per check"),
    "http_sensor": (5, "HttpSensorTrigger (providers-http)"),
    "auto": (6, "NoxusRunTrigger auto (today's default)"),
}
STATUS_ENDPOINTS = ("get_run_status", "get_run")
#: Concurrent requests of the orchestrator when it creates runs and reads their end times.
SETUP_CONCURRENCY = 50
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures.

    :param cases: (configuration, N) pairs, in order.
    :param run_seconds: the span the run lengths are drawn from.
    :param interval: seconds between two status checks of one waiter.
    :param spread: seconds over which the waiters start.
    :param profile_dir: sample each driver with py-spy into this directory (collapsed stacks, CPU only).
    :param gc_freeze: move everything the driver imported out of the garbage collector's reach first.
    :param count_objects: count the collector's objects per waiting run (a diagnostic: costs CPU once).
    """

    cases: tuple[tuple[str, int], ...]
    run_seconds: tuple[float, float]
    interval: float
    spread: float
    seed: int = 20261128
    profile_dir: Path | None = None
    gc_freeze: bool = False
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


@contextlib.contextmanager
def emulator_process(workdir: Path) -> Iterator[str]:
    """The emulator in its own process on a free loopback port; yields its base URL."""
    log_path = workdir / "emulator.log"
    args = [sys.executable, "-m", "airflow_provider_noxus.emulator", "--port", "0"]
    args += ["--api-key", API_KEY, "--admin-token", ADMIN_TOKEN]
    with child_process(args, log_path) as process:
        yield wait_for_log_line(process, log_path, r"(http://127\.0\.0\.1:\d+)", "the emulator").group(1)


@contextlib.contextmanager
def status_proxy_process(emulator_url: str, workdir: Path) -> Iterator[str]:
    """The 404-until-final proxy of configuration 5 in its own process; yields its base URL."""
    log_path = workdir / "status_proxy.log"
    args = [sys.executable, str(HERE / "status_proxy.py"), "--emulator-url", emulator_url]
    args += ["--api-key", API_KEY]
    with child_process(args, log_path) as process:
        port = wait_for_log_line(process, log_path, r"^ready (\d+)", "the status proxy").group(1)
        yield f"http://127.0.0.1:{port}"


async def create_runs(emulator_url: str, workflow_id: str, lengths: list[float]) -> list[str]:
    """Create one ``slow`` run per length, a few at a time; their ids in order."""
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    async with aiohttp.ClientSession(base_url=emulator_url, headers={"X-API-Key": API_KEY}) as session:

        async def create(seconds: float) -> str:
            async with (
                limit,
                session.post(
                    f"/v1/workflows/{workflow_id}/runs", json={"input": {"seconds": round(seconds, 3)}}
                ) as response,
            ):
                response.raise_for_status()
                return str((await response.json())["id"])

        return list(await asyncio.gather(*(create(seconds) for seconds in lengths)))


async def read_runs(emulator_url: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """Each run as the emulator's control API shows it (not counted as a status check)."""
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
    config: str, n: int, plan: Plan, emulator_url: str, proxy_url: str | None, workdir: Path
) -> dict[str, Any]:
    """One configuration at one N: a fresh driver process against a reset emulator; one result row."""
    admin_request(emulator_url, "POST", "/_emulator/reset")
    workflow_id = admin_request(emulator_url, "GET", "/_emulator/workflows")["slow"]
    draw = random.Random(plan.seed + n)
    lengths = [draw.uniform(*plan.run_seconds) for _ in range(n)]
    give_up_after = plan.run_seconds[1] + plan.spread + 3 * plan.interval + 60
    log_path = workdir / f"driver-{config}-{n}.log"
    result_path = workdir / f"driver-{config}-{n}.json"
    args = [sys.executable, str(HERE / "trigger_driver.py"), "--config", config]
    args += ["--emulator-url", emulator_url, "--api-key", API_KEY, "--workflow-id", workflow_id]
    args += ["--interval", str(plan.interval), "--spread", str(plan.spread)]
    args += ["--give-up-after", str(give_up_after), "--result-file", str(result_path)]
    if proxy_url:
        args += ["--proxy-url", proxy_url]
    args += ["--gc-freeze"] if plan.gc_freeze else []
    args += ["--count-objects"] if plan.count_objects else []
    if plan.profile_dir is not None:
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        profile = str(plan.profile_dir / f"{config}-{n}.txt")
        args = [py_spy, "record", "--gil", "--format", "raw", "--rate", "250", "-o", profile, "--", *args]
    with child_process(args, log_path, talk=True) as driver:
        assert driver.stdin is not None and driver.stdout is not None
        read_line_until(driver.stdout, r"^ready$", f"the {config} driver", log_path)
        run_ids = asyncio.run(create_runs(emulator_url, workflow_id, lengths))
        driver.stdin.write(json.dumps(run_ids) + "\n")
        driver.stdin.flush()
        driver.stdout.read()  # until it exits (the driver prints nothing more; py-spy may)
        driver.wait(timeout=60)
    if driver.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"the {config} driver (N={n}) failed (exit {driver.returncode}); its stderr ends with:\n{tail}"
        )
    driven = json.loads(result_path.read_text())
    counters = admin_request(emulator_url, "GET", "/_emulator/counters")
    proxy_errors = 0
    if proxy_url:
        proxy_errors = int(admin_request(proxy_url, "GET", "/_proxy/counters")["upstream_errors"])
    runs = asyncio.run(read_runs(emulator_url, run_ids))
    return summarize(config, n, plan, driven, counters, runs, proxy_errors)


def summarize(
    config: str,
    n: int,
    plan: Plan,
    driven: dict[str, Any],
    counters: dict[str, Any],
    runs: list[dict[str, Any]],
    proxy_errors: int,
) -> dict[str, Any]:
    """The result row of one case, from the driver's measurements and the emulator's view."""
    requests: dict[str, dict[str, int]] = counters.get("requests", {})
    checks = sum(sum(requests.get(endpoint, {}).values()) for endpoint in STATUS_ENDPOINTS)
    stream_connections = sum(requests.get("run_events", {}).values())
    http_errors = sum(
        count
        for endpoint in (*STATUS_ENDPOINTS, "run_events")
        for status, count in requests.get(endpoint, {}).items()
        if not status.startswith("2")
    )
    events: dict[str, list[Any]] = driven["events"]
    wakes_ms = [
        (events[run["id"]][0] - parse_time(run["finished_at"])) * 1000
        for run in runs
        if run["id"] in events and run.get("finished_at")
    ]
    unfinished = sum(1 for run in runs if run.get("status") != "completed")
    cpu_s = float(driven["cpu_s"])
    number, label = CONFIG_LABELS[config]
    wake_p50, wake_p99 = percentile(wakes_ms, 0.5), percentile(wakes_ms, 0.99)
    return {
        "config": config,
        "config_no": number,
        "label": label,
        "n": n,
        "interval_s": plan.interval,
        "run_seconds": list(plan.run_seconds),
        "checks": checks,
        "stream_connections": stream_connections,
        "cpu_s": round(cpu_s, 3),
        "cpu_per_check_us": round(cpu_s / checks * 1e6, 1) if checks else None,
        "cpu_per_run_ms": round(cpu_s / n * 1e3, 2),
        "rss_peak_mb": round(driven["rss_peak_kb"] / 1024, 1),
        "rss_per_run_kb": round((driven["rss_peak_kb"] - driven["rss_before_kb"]) / n, 2),
        "lag_p50_ms": round(driven["lag_p50_ms"], 1),
        "lag_p99_ms": round(driven["lag_p99_ms"], 1),
        "lag_max_ms": round(driven["lag_max_ms"], 1),
        "blocked_warnings": driven["blocked_warnings"],
        "lag_spikes_ms": driven["lag_spikes_ms"],
        "objects_per_run": driven["objects_per_run"],
        "full_gc_count": driven["full_gc_count"],
        "full_gc_max_ms": round(driven["full_gc_max_ms"], 1),
        "wake_p50_ms": round(wake_p50, 1) if wake_p50 is not None else None,
        "wake_p99_ms": round(wake_p99, 1) if wake_p99 is not None else None,
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
    """Every case of ``plan`` against one emulator process; the result rows."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="noxus-bench-") as tmp:
        workdir = Path(tmp)
        with emulator_process(workdir) as emulator_url, contextlib.ExitStack() as proxies:
            proxy_url = None
            if any(config == "http_sensor" for config, _n in plan.cases):
                proxy_url = proxies.enter_context(status_proxy_process(emulator_url, workdir))
            for config, n in plan.cases:
                print(f"  {CONFIG_LABELS[config][1]}, N={n} ...", end=" ", file=progress, flush=True)
                started = time.monotonic()
                row = run_case(config, n, plan, emulator_url, proxy_url, workdir)
                took = time.monotonic() - started
                print(f"{took:.0f} s, {row['errors']} errors", file=progress, flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=list(CONFIG_LABELS), help="repeatable")
    parser.add_argument("--n", type=int, action="append", help="repeatable")
    parser.add_argument("--min-seconds", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles of the drivers")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the drivers after imports")
    parser.add_argument("--count-objects", action="store_true", help="count objects per run (diagnostic)")
    args = parser.parse_args(argv)
    configs = args.config or ["poll", "raw_shared"]
    plan = Plan(
        cases=tuple((config, n) for n in (args.n or [1000]) for config in configs),
        run_seconds=(args.min_seconds, args.max_seconds),
        interval=args.interval,
        spread=args.interval,
        profile_dir=args.profile,
        gc_freeze=args.gc_freeze,
        count_objects=args.count_objects,
    )
    rows = run_plan(plan)
    for row in rows:
        print(json.dumps(row))
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
