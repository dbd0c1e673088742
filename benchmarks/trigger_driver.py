"""One configuration of the trigger benchmark: N waiters on one event loop, in a process of its own.

Started by :mod:`trigger_scale` (never by hand): ``python benchmarks/trigger_driver.py --config
poll_shared --emulator-url URL --api-key KEY --interval 5``. It sets itself up (imports, logging,
Airflow's ``TriggerRunner``) and prints ``ready``. On stdin it then reads the number of runs (one JSON
line, ``{"n": N}``: the measurement starts there), then one JSON line ``[run_id, workflow_id]`` per run
as the run is created: each line starts that run's waiter at once, the way a deferred task's trigger
arrives in a triggerer right after the task created its run. When every waiter is done it writes its
measurements as JSON to ``--result-file`` and exits.

Triggers (configurations ``poll_shared``, ``poll_per_run``, ``stream``, ``auto``, ``http_sensor``) are
driven the way the triggerer drives them: ``TriggerRunner.run_trigger`` (greenback portal included)
with its ``block_watchdog`` beside them, each started like ``TriggerRunner.create_triggers`` does
(yielding to the loop between two starts). ``poll_shared`` reads statuses through the watchers its
triggers share (``NoxusRunTrigger.shared_status_checks``, the default), ``poll_per_run`` reads each
run's own status as before. The raw loops (``raw_shared``, ``session_per_check``) run as plain
asyncio tasks with no Airflow around them. Every configuration gets the same lag probe, started before
the first waiter.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

FINAL_STATUSES = frozenset({"completed", "failed", "stopped"})
TRIGGER_CONFIGS = ("poll_shared", "poll_per_run", "stream", "auto", "http_sensor")
#: Configuration -> the trigger's wait_strategy (the others are not NoxusRunTrigger).
NOXUS_STRATEGIES = {"poll_shared": "poll", "poll_per_run": "poll", "stream": "stream", "auto": "auto"}
RAW_CONFIGS = ("raw_shared", "session_per_check")
CONFIGS = TRIGGER_CONFIGS + RAW_CONFIGS
NOXUS_CONN_ID = "noxus_bench"
HTTP_CONN_ID = "http_bench"
#: Period of the lag probe; the triggerer's own watchdog sleeps 0.1 s too.
PROBE_PERIOD_S = 0.1
#: Connections of the raw shared session, as the hook's shared pool.
RAW_POOL_LIMIT = 100
#: Lags above this are kept with their time, to tell start-up stalls from steady-state ones.
LAG_SPIKE_S = 0.05
MAX_LAG_SPIKES = 200
#: Error messages kept in the result (the count is always complete).
MAX_ERROR_EXAMPLES = 5


@dataclass
class Measurements:
    """What the driver records while the waiters run."""

    #: (seconds since the measurement began, lag) of each probe.
    lags_s: list[tuple[float, float]] = field(default_factory=list)
    #: (seconds since the measurement began, CPU seconds of the process) every half second.
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)
    lag_spikes: list[tuple[float, float]] = field(default_factory=list)
    #: Pauses of the full (generation 2) garbage collections, and every collection's time by generation.
    gc_pauses_s: list[float] = field(default_factory=list)
    gc_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    objects_per_run: float | None = None
    peak_rss_kb: int = 0
    peak_fds: int = 0
    connections_opened: int = 0
    blocked_warnings: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    events: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: When each run's waiter started (epoch seconds).
    starts: dict[str, float] = field(default_factory=dict)
    #: Requests of the shared status watchers (list pages, per-run reads), and the most alive at once.
    watcher_pages_read: int = 0
    watcher_runs_read: int = 0
    watchers_peak: int = 0
    active_watchers: Callable[[], int] = lambda: 0
    #: When the measurement began (``time.monotonic``), and seconds from then to the first and the last
    #: arrival.
    began: float = 0.0
    first_arrival_s: float | None = None
    last_arrival_s: float = 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < MAX_ERROR_EXAMPLES:
            self.error_examples.append(message)


def rss_kb(field_name: str = "VmRSS") -> int:
    """This process's resident set (``VmRSS``) or its peak (``VmHWM``) in KiB, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def quiet_logging(measurements: Measurements) -> None:
    """Send stdlib log records to /dev/null (formatted: their cost stays) and count watchdog warnings."""
    import structlog

    devnull = logging.FileHandler(os.devnull)
    devnull.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger) and logger.handlers:
            logger.handlers = [devnull]
    logging.getLogger().setLevel(logging.INFO)

    def count_blocked(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
        if "was blocked" in str(event_dict.get("event", "")):
            measurements.blocked_warnings += 1
        raise structlog.DropEvent

    structlog.configure(
        processors=[count_blocked],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )


def time_collections(measurements: Measurements) -> None:
    """Record how long each garbage collection holds the loop: the full ones one by one, the total by
    generation."""
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            took = time.perf_counter() - started[0]
            measurements.gc_seconds[info["generation"]] += took
            if info["generation"] == 2:
                measurements.gc_pauses_s.append(took)

    gc.callbacks.append(on_gc)


def count_connections(loop: asyncio.AbstractEventLoop, measurements: Measurements) -> None:
    """Count every TCP connection the loop opens (aiohttp opens them all through this method)."""
    create_connection = loop.create_connection

    async def counted(*args: Any, **kwargs: Any) -> Any:
        measurements.connections_opened += 1
        return await create_connection(*args, **kwargs)

    loop.create_connection = counted  # type: ignore[method-assign]


async def probe(measurements: Measurements, stop: asyncio.Event) -> None:
    """Event-loop lag (how late a 0.1 s sleep wakes), and the peaks of RSS, open files and watchers."""
    samples = 0
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(PROBE_PERIOD_S)
        lag = max(0.0, time.monotonic() - started - PROBE_PERIOD_S)
        since = started - measurements.began
        measurements.lags_s.append((since, lag))
        if lag > LAG_SPIKE_S and len(measurements.lag_spikes) < MAX_LAG_SPIKES:
            measurements.lag_spikes.append((round(since, 2), round(lag * 1000, 1)))
        samples += 1
        if samples % 5 == 0:
            measurements.cpu_samples.append((round(since, 2), round(cpu_seconds(), 3)))
            measurements.peak_rss_kb = max(measurements.peak_rss_kb, rss_kb())
            measurements.peak_fds = max(measurements.peak_fds, open_fds())
            measurements.watchers_peak = max(measurements.watchers_peak, measurements.active_watchers())


async def arrivals(stdin: asyncio.StreamReader, n: int) -> AsyncIterator[tuple[str, str]]:
    """The ``n`` runs (run id, workflow id) as the orchestrator sends them, one JSON line each."""
    for _ in range(n):
        line = await stdin.readline()
        if not line:
            raise RuntimeError("stdin closed before every run arrived")
        run_id, workflow_id = json.loads(line)
        yield str(run_id), str(workflow_id)


async def start_each(
    runs: AsyncIterator[tuple[str, str]],
    start: Callable[[int, str, str], Awaitable[None]],
    tasks: list[asyncio.Task[None]],
    measurements: Measurements,
) -> None:
    """Start one task per arriving run, yielding to the loop between two starts (as the triggerer's
    ``create_triggers`` does), appending each to ``tasks``."""
    index = 0
    async for run_id, workflow_id in runs:
        measurements.starts[run_id] = time.time()
        measurements.last_arrival_s = time.monotonic() - measurements.began
        if measurements.first_arrival_s is None:
            measurements.first_arrival_s = measurements.last_arrival_s
        tasks.append(asyncio.create_task(start(index, run_id, workflow_id)))  # type: ignore[arg-type]
        index += 1
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------------------------
# Configurations 3 and 4: raw loops, no Airflow
# ------------------------------------------------------------------------------------------------


async def poll_run(
    get_status: Callable[[str], Awaitable[str]], run_id: str, interval: float, measurements: Measurements
) -> None:
    """Check the run's status every ``interval`` seconds until it is final; errors are retried."""
    while True:
        try:
            status = await get_status(run_id)
        except Exception as error:
            measurements.error(f"run {run_id}: {type(error).__name__}: {error}")
        else:
            if status in FINAL_STATUSES:
                measurements.events[run_id] = (time.time(), "success" if status == "completed" else status)
                return
        await asyncio.sleep(interval)


def raw_status_readers(
    config: str, base_url: str, api_key: str
) -> tuple[Callable[[str], Awaitable[str]], Callable[[], Awaitable[None]]]:
    """The ``GET /v1/runs/{id}`` of a raw configuration, and how to release what it holds."""
    import aiohttp

    headers = {"X-API-Key": api_key}
    if config == "raw_shared":
        session = aiohttp.ClientSession(
            base_url=base_url, headers=headers, connector=aiohttp.TCPConnector(limit=RAW_POOL_LIMIT)
        )

        async def shared_get(run_id: str) -> str:
            async with session.get(f"/v1/runs/{run_id}") as response:
                response.raise_for_status()
                return str((await response.json())["status"])

        return shared_get, session.close

    async def fresh_session_get(run_id: str) -> str:
        async with (
            aiohttp.ClientSession(base_url=base_url, headers=headers) as fresh,
            fresh.get(f"/v1/runs/{run_id}") as response,
        ):
            response.raise_for_status()
            return str((await response.json())["status"])

    async def nothing_to_close() -> None:
        return None

    return fresh_session_get, nothing_to_close


# ------------------------------------------------------------------------------------------------
# Configurations 1, 2 and 5: triggers, driven by Airflow's TriggerRunner
# ------------------------------------------------------------------------------------------------


def build_trigger(config: str, run_id: str, workflow_id: str, interval: float) -> Any:
    if config == "http_sensor":
        from airflow.providers.http.triggers.http import HttpSensorTrigger

        return HttpSensorTrigger(endpoint=f"runs/{run_id}", http_conn_id=HTTP_CONN_ID, poke_interval=interval)
    from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

    return NoxusRunTrigger(
        noxus_conn_id=NOXUS_CONN_ID,
        workflow_id=workflow_id,
        run_id=run_id,
        poll_interval=interval,
        wait_strategy=NOXUS_STRATEGIES[config],
    )


def count_watcher_requests(measurements: Measurements) -> None:
    """Count every request of the shared status watchers as it is made (a watcher's own counters go
    with it when it ends): their public counters ``pages_read`` and ``runs_read`` become properties
    that also add each increment to the totals. Let the probe count the live watchers."""
    from airflow_provider_noxus.triggers.status_watcher import StatusWatcher, StatusWatchers

    def counter(name: str, total: str) -> property:
        def get(watcher: StatusWatcher) -> int:
            return int(watcher.__dict__.get(name, 0))

        def set_(watcher: StatusWatcher, value: int) -> None:
            setattr(measurements, total, getattr(measurements, total) + value - get(watcher))
            watcher.__dict__[name] = value

        return property(get, set_)

    StatusWatcher.pages_read = counter("pages_read", "watcher_pages_read")  # type: ignore[assignment]
    StatusWatcher.runs_read = counter("runs_read", "watcher_runs_read")  # type: ignore[assignment]
    measurements.active_watchers = lambda: len(StatusWatchers.active())


def event_outcome(payload: Any) -> str:
    """``success`` for a run that completed, else what the event says."""
    if payload is True:  # HttpSensorTrigger: the endpoint stopped answering 404, so the run is final
        return "success"
    if isinstance(payload, dict):
        return str(payload.get("status"))
    return repr(payload)


async def run_triggers(
    config: str,
    runs: AsyncIterator[tuple[str, str]],
    n: int,
    interval: float,
    measurements: Measurements,
) -> None:
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    runner = TriggerRunner()
    watchdog = asyncio.create_task(runner.block_watchdog())
    tasks: list[asyncio.Task[None]] = []

    async def drive(index: int, run_id: str, workflow_id: str) -> None:
        trigger_id = index + 1
        trigger = build_trigger(config, run_id, workflow_id, interval)
        untimed_run = trigger.run

        async def timed_run() -> AsyncIterator[Any]:
            async for event in untimed_run():
                measurements.events.setdefault(run_id, (time.time(), event_outcome(event.payload)))
                yield event

        trigger.run = timed_run
        runner.triggers[trigger_id] = {
            "task": asyncio.current_task(),  # type: ignore[typeddict-item]
            "is_watcher": False,
            "name": f"{type(trigger).__name__}(run_id={run_id})",
            "events": 0,
        }
        try:
            await runner.run_trigger(trigger_id, trigger)
        except Exception as error:
            measurements.error(f"run {run_id}: {type(error).__name__}: {error}")
            return
        finally:
            del runner.triggers[trigger_id]
            runner.events.clear()  # the triggerer's outbound queue, drained here instead of sent on
        if run_id not in measurements.events:
            measurements.error(f"run {run_id}: the trigger ended without an event")
        elif measurements.events[run_id][1] != "success":
            measurements.error(f"run {run_id}: event {measurements.events[run_id][1]!r}")

    try:
        await start_each(runs, drive, tasks, measurements)
        await count_objects(n, measurements)
        await asyncio.gather(*tasks)
    finally:
        runner.stop = True
        watchdog.cancel()
        for task in tasks:
            task.cancel()


#: Objects tracked by the collector before the first waiter (set by :func:`main` when asked for).
OBJECTS_BEFORE: list[int] = []


async def count_objects(n: int, measurements: Measurements) -> None:
    """Objects the collector tracks per waiting run, once all have started (only with --count-objects)."""
    if OBJECTS_BEFORE:
        await asyncio.sleep(1.0)
        measurements.objects_per_run = (len(gc.get_objects()) - OBJECTS_BEFORE[0]) / n


async def stdin_reader() -> asyncio.StreamReader:
    """This process's stdin as a stream of the running loop."""
    reader = asyncio.StreamReader(limit=2**20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def lag_stats(lags: Iterator[float]) -> dict[str, float]:
    """p50, p99 and max of ``lags`` (seconds), in ms."""
    values = list(lags)
    return {
        "p50": percentile(values, 0.5) * 1000,
        "p99": percentile(values, 0.99) * 1000,
        "max": max(values, default=0.0) * 1000,
    }


async def measure(args: argparse.Namespace, measurements: Measurements) -> dict[str, Any]:
    """Run a waiter for every run that arrives on stdin; the CPU, RSS, lag and connection numbers of
    that span."""
    stdin = await stdin_reader()
    n = int(json.loads(await stdin.readline())["n"])
    count_connections(asyncio.get_running_loop(), measurements)
    time_collections(measurements)
    stop_probe = asyncio.Event()
    measurements.began = time.monotonic()
    began_epoch = time.time()
    probe_task = asyncio.create_task(probe(measurements, stop_probe))
    rss_before = rss_kb()
    cpu_before = cpu_seconds()
    runs = arrivals(stdin, n)
    try:
        if args.config in TRIGGER_CONFIGS:
            waiting = run_triggers(args.config, runs, n, args.interval, measurements)
        else:
            waiting = run_raw(args, runs, n, measurements)
        await asyncio.wait_for(waiting, timeout=args.give_up_after)
    except asyncio.TimeoutError:
        missing = n - len(measurements.events)
        measurements.error(f"{missing} runs still waited on after {args.give_up_after:.0f} s")
    cpu_used = cpu_seconds() - cpu_before
    wall = time.monotonic() - measurements.began
    stop_probe.set()
    await probe_task
    # The start: from the first arrival to two intervals after the last (their first reads included).
    first_arrival_s = measurements.first_arrival_s or 0.0
    start_window_s = measurements.last_arrival_s + 2 * args.interval
    overall = lag_stats(lag for _at, lag in measurements.lags_s)
    at_start = lag_stats(lag for at, lag in measurements.lags_s if first_arrival_s <= at <= start_window_s)
    return {
        "config": args.config,
        "n": n,
        "cpu_s": cpu_used,
        "wall_s": wall,
        "began_epoch": began_epoch,
        "cpu_samples": [(at, used - cpu_before) for at, used in measurements.cpu_samples],
        "arrival_s": measurements.last_arrival_s - first_arrival_s,
        "rss_before_kb": rss_before,
        "rss_peak_kb": max(measurements.peak_rss_kb, rss_kb("VmHWM")),
        "peak_fds": measurements.peak_fds,
        "lag_p50_ms": overall["p50"],
        "lag_p99_ms": overall["p99"],
        "lag_max_ms": overall["max"],
        "start_window_s": start_window_s,
        "start_lag_p99_ms": at_start["p99"],
        "start_lag_max_ms": at_start["max"],
        "lag_spikes_ms": measurements.lag_spikes,
        "blocked_warnings": measurements.blocked_warnings,
        "objects_per_run": measurements.objects_per_run,
        "full_gc_count": len(measurements.gc_pauses_s),
        "full_gc_max_ms": max(measurements.gc_pauses_s, default=0.0) * 1000,
        "gc_ms_by_generation": [seconds * 1000 for seconds in measurements.gc_seconds],
        "connections_opened": measurements.connections_opened,
        "watcher_pages_read": measurements.watcher_pages_read,
        "watcher_runs_read": measurements.watcher_runs_read,
        "watchers_peak": measurements.watchers_peak,
        "errors": measurements.errors,
        "error_examples": measurements.error_examples,
        "starts": measurements.starts,
        "events": measurements.events,
    }


async def run_raw(
    args: argparse.Namespace, runs: AsyncIterator[tuple[str, str]], n: int, measurements: Measurements
) -> None:
    get_status, close = raw_status_readers(args.config, args.emulator_url, args.api_key)
    tasks: list[asyncio.Task[None]] = []
    try:
        await start_each(
            runs,
            lambda _index, run_id, _workflow_id: poll_run(get_status, run_id, args.interval, measurements),
            tasks,
            measurements,
        )
        await count_objects(n, measurements)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await close()


def set_up_airflow(args: argparse.Namespace, measurements: Measurements) -> None:
    """Airflow's home and the two connections, before anything imports airflow; then the imports."""
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="noxus-bench-airflow-"))
    os.environ[f"AIRFLOW_CONN_{NOXUS_CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "noxus", "host": args.emulator_url, "password": args.api_key}
    )
    if args.proxy_url:
        host, _, port = args.proxy_url.removeprefix("http://").partition(":")
        os.environ[f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "http", "host": host, "port": int(port), "schema": "http"}
        )
    import airflow.jobs.triggerer_job_runner  # imported here, before the baseline
    from airflow._shared.observability.metrics import stats

    # The metrics registry is read from YAML at its first use (the watchdog's first warning): a
    # one-off start-up cost of any triggerer, paid here rather than inside the measured span.
    stats._get_registry()

    if args.config == "http_sensor":
        import airflow.providers.http.triggers.http  # noqa: F401
    else:
        from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

        NoxusRunTrigger.shared_status_checks = args.config != "poll_per_run"
        count_watcher_requests(measurements)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=CONFIGS, required=True)
    parser.add_argument("--emulator-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--proxy-url", help="the status proxy, for http_sensor")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between status checks")
    parser.add_argument("--give-up-after", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument("--result-file", required=True, help="where the measurements go (JSON)")
    parser.add_argument(
        "--count-objects", action="store_true", help="count the collector's objects per run (costs CPU once)"
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after the imports (not what a triggerer does)"
    )
    parser.add_argument(
        "--gc-off", action="store_true", help="no garbage collection at all (a diagnostic: what it costs)"
    )
    args = parser.parse_args(argv)

    measurements = Measurements()
    if args.config in TRIGGER_CONFIGS:
        set_up_airflow(args, measurements)
    quiet_logging(measurements)
    import aiohttp  # noqa: F401  (imported before the baseline, in every configuration)

    if args.gc_off:
        gc.disable()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    if args.count_objects:
        OBJECTS_BEFORE.append(len(gc.get_objects()))
    print("ready", flush=True)
    result = asyncio.run(measure(args, measurements))
    with open(args.result_file, "w") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
