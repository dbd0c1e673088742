"""Requests to Noxus per poll of ``NoxusRunEventTrigger`` on a busy workflow: 10,000 runs of history and a
few new runs per poll, some old runs still in flight deep in the list.

A purpose-built loopback server stands in for Noxus (the emulator would have to run 10,000 runs first):
it serves ``GET /v1/workflows/{id}/runs`` (newest first, the API's envelope) and ``GET /v1/runs/{id}``
from a synthetic history, and counts requests per poll. New runs are created between polls and end
``--run-seconds`` later; ``--deep-in-flight`` runs created days ago end during the measurement. The
trigger runs in this process as the triggerer would run it; every event is checked (each run once,
none from history, none missing).

``python benchmarks/event_watch.py [--history 10000] [--polls 40] [--poll-interval 0.5] [--fan-out 500]``;
``--fan-out`` adds runs made just before the watcher starts and ending ``--fan-out-seconds`` later (in
flight below the new runs). The result goes to ``benchmarks/results/event_watch[-fan-out].json`` and a
line per figure to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="noxus-bench-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from aiohttp import web

RESULTS = Path(__file__).resolve().parent / "results" / "event_watch.json"
WORKFLOW = "busy-workflow"
KEY = "bench-key"


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat()


class BusyWorkflow:
    """The runs of one workflow, oldest first, with when each ends (None: never during the benchmark)."""

    def __init__(self, history: int, deep_in_flight: int, seed: int, fan_out: int, fan_out_s: float) -> None:
        chooser = random.Random(seed)
        now = time.time()
        self.runs: list[dict[str, Any]] = []
        self.ends: dict[str, float | None] = {}
        self.requests: Counter[str] = Counter()
        deep = set(chooser.sample(range(history), deep_in_flight))
        for index in range(history):  # over the last 10 days
            created = now - 10 * 86_400 + index * (10 * 86_400 - 60) / history
            self.add(f"h{index:05d}", created, None if index in deep else created + 30)
        self.deep = [f"h{index:05d}" for index in sorted(deep)]
        # A fan-out made elsewhere just before the watcher starts: in flight, pushed down by newer runs.
        self.fan_out = [f"f{index:05d}" for index in range(fan_out)]
        for run_id in self.fan_out:
            self.add(run_id, now - 1, now + fan_out_s)

    def add(self, run_id: str, created: float, ends: float | None) -> None:
        self.runs.append({"id": run_id, "workflow_id": WORKFLOW, "created_at": iso(created)})
        self.ends[run_id] = ends

    def view(self, run: dict[str, Any]) -> dict[str, Any]:
        ends = self.ends[run["id"]]
        if ends is None or ends > time.time():
            return {**run, "status": "running", "finished_at": None}
        return {**run, "status": "completed", "finished_at": iso(ends)}

    def app(self) -> web.Application:
        app = web.Application()

        async def list_runs(request: web.Request) -> web.Response:
            self.requests["list_runs"] += 1
            if request.headers.get("X-API-Key") != KEY:
                return web.json_response({"detail": "bad key"}, status=401)
            page, size = int(request.query.get("page", 1)), min(int(request.query.get("size", 50)), 100)
            newest_first = self.runs[::-1][(page - 1) * size : page * size]
            pages = -(-len(self.runs) // size)
            body = {"items": [self.view(run) for run in newest_first], "total": len(self.runs), "page": page,
                    "size": size, "pages": pages}  # fmt: skip
            return web.json_response(body)

        async def get_run(request: web.Request) -> web.Response:
            self.requests["get_run_status"] += 1
            run_id = request.match_info["run_id"]
            found = next((run for run in self.runs if run["id"] == run_id), None)
            if found is None:
                return web.json_response({"detail": "no such run"}, status=404)
            return web.json_response(self.view(found))

        app.router.add_get(f"/v1/workflows/{WORKFLOW}/runs", list_runs)
        app.router.add_get("/v1/runs/{run_id}", get_run)
        return app


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    workflow = BusyWorkflow(args.history, args.deep_in_flight, args.seed, args.fan_out, args.fan_out_seconds)
    runner = web.AppRunner(workflow.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    os.environ["AIRFLOW_CONN_NOXUS_DEFAULT"] = json.dumps(
        {"conn_type": "noxus", "host": f"http://127.0.0.1:{port}", "password": KEY}
    )
    from airflow_provider_noxus.triggers.events import NoxusRunEventTrigger
    from airflow_provider_noxus.triggers.run_feed import active_feeds

    trigger = NoxusRunEventTrigger(WORKFLOW, poll_interval=args.poll_interval)
    events: list[str] = []

    async def collect() -> None:
        async for event in trigger.run():
            events.append(event.payload["run_id"])

    task = asyncio.ensure_future(collect())
    chooser = random.Random(args.seed + 1)
    per_poll: list[dict[str, int]] = []
    made: list[str] = []
    deep_ended: list[str] = []
    try:
        await until(lambda: bool(active_feeds()) and active_feeds()[0].polls >= 1, 120, "a first poll")
        feed = active_feeds()[0]
        first = dict(workflow.requests)
        workflow.requests.clear()
        cpu_start = time.process_time()
        for poll in range(args.polls):
            # A few new runs per poll, and now and then one of the old runs in flight ends.
            for _ in range(chooser.choice([0, 1, 1, 2, 3])):
                run_id = f"n{len(made):05d}"
                workflow.add(run_id, time.time(), time.time() + args.run_seconds)
                made.append(run_id)
            if poll and poll % max(1, args.polls // (args.deep_in_flight + 1)) == 0 and workflow.deep:
                deep_ended.append(workflow.deep.pop(0))
                workflow.ends[deep_ended[-1]] = time.time()
            before, polls = dict(workflow.requests), feed.polls
            await until(lambda polls=polls: feed.polls > polls, 60, "the next poll")  # type: ignore[misc]
            per_poll.append(
                {k: workflow.requests[k] - before.get(k, 0) for k in ("list_runs", "get_run_status")}
            )
        cpu = time.process_time() - cpu_start
        expected = {*made, *deep_ended, *workflow.fan_out}
        with contextlib.suppress(TimeoutError):
            await until(lambda: expected <= set(events), args.run_seconds + 20 * args.poll_interval, "events")
        await asyncio.sleep(3 * args.poll_interval)  # anything repeated shows now
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
    told = Counter(events)
    requests = [p["list_runs"] + p["get_run_status"] for p in per_poll]
    return {
        "history_runs": args.history,
        "new_runs": len(made),
        "deep_runs_in_flight": args.deep_in_flight,
        "deep_runs_ended": len(deep_ended),
        "fan_out_runs_in_flight": args.fan_out,
        "polls": len(per_poll),
        "poll_interval_s": args.poll_interval,
        "first_poll_requests": first,
        "requests_per_poll_mean": round(statistics.mean(requests), 2),
        "requests_per_poll_max": max(requests),
        "list_pages_per_poll_mean": round(statistics.mean(p["list_runs"] for p in per_poll), 2),
        "run_reads_per_poll_mean": round(statistics.mean(p["get_run_status"] for p in per_poll), 2),
        "cpu_ms_per_poll_with_server": round(1000 * cpu / max(1, len(per_poll)), 2),
        "events": len(events),
        "events_expected": len(expected),
        "repeated": sorted(run for run, count in told.items() if count > 1),
        "missing": sorted(expected - set(told)),
        "unexpected": sorted(set(told) - expected),
    }


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``condition()`` holds; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in itertools.count():
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")
        await asyncio.sleep(0.005)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=40)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--run-seconds", type=float, default=1.0)
    parser.add_argument("--deep-in-flight", type=int, default=5)
    parser.add_argument("--fan-out", type=int, default=0, help="runs in flight at the start, ending later")
    parser.add_argument("--fan-out-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    for name, value in result.items():
        print(f"{name}: {value}")
    if not args.no_save:
        path = RESULTS.with_name("event_watch-fan-out.json") if args.fan_out else RESULTS
        path.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not (result["repeated"] or result["missing"] or result["unexpected"]) else 1


if __name__ == "__main__":
    sys.exit(main())
