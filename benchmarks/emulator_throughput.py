"""How much one Noxus emulator process sustains: status GETs per second and concurrently open SSE streams.

The emulator runs in its own process (``python -m airflow_provider_noxus.emulator``), pinned to one core
where the machine has two or more; the load comes from this process (aiohttp client, keep-alive
connections), pinned to another core. Targets: >= 1,500 status GETs/s and >= 2,000 open streams. It
reports and exits 0 whatever the speed; it exits 1 only on errors (a non-200 answer, a stream that got no
frames or no final frame).

Usage::

    python benchmarks/emulator_throughput.py           # ~25 s
    python benchmarks/emulator_throughput.py --quick   # < 20 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp

API_KEY = "bench-key"
ADMIN_TOKEN = "bench-admin"
GET_TARGET = 1500
STREAM_TARGET = 2000


@dataclass
class Result:
    """One measured line of the report."""

    name: str
    value: str
    target: str = ""
    errors: list[str] = field(default_factory=list)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin_to_core(core: int) -> None:
    """Pin the calling process to one core, when the machine has more than one."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})


@contextlib.contextmanager
def emulator_process(port: int) -> Iterator[str]:
    """Run the emulator in a subprocess pinned to core 0; yield its URL, stop it on exit."""
    command = [
        sys.executable,
        "-m",
        "airflow_provider_noxus.emulator",
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        "--admin-token",
        ADMIN_TOKEN,
        "--keep-alive-seconds",
        "5",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=lambda: pin_to_core(0))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/v1/nodes", timeout=1)
            except urllib.error.HTTPError:
                break  # 401 without a key: it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def create_runs(
    session: aiohttp.ClientSession, url: str, workflow_id: str, count: int, seconds: float
) -> list[str]:
    """Create ``count`` runs of the ``slow`` workflow; return their ids."""

    async def create() -> str:
        path = f"{url}/v1/workflows/{workflow_id}/runs"
        async with session.post(path, json={"input": {"seconds": seconds}}) as response:
            response.raise_for_status()
            run_id: str = (await response.json())["id"]
            return run_id

    return list(await asyncio.gather(*(create() for _ in range(count))))


async def measure_gets(
    session: aiohttp.ClientSession, urls: list[str], duration: float, concurrency: int
) -> tuple[int, list[float], list[str]]:
    """GET urls round-robin from ``concurrency`` workers for ``duration`` s: (count, latencies, errors)."""
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        index = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            async with session.get(urls[index % len(urls)]) as response:
                await response.read()
                if response.status != 200:
                    errors.append(f"GET answered {response.status}")
            latencies.append(time.perf_counter() - started)
            index += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return len(latencies), latencies, errors


async def server_count(session: aiohttp.ClientSession, url: str, endpoint: str) -> int:
    """How many 200 answers the emulator counted on ``endpoint`` (a cross-check of the client's count)."""
    admin = {"X-Emulator-Admin-Token": ADMIN_TOKEN}
    async with session.get(f"{url}/_emulator/counters", headers=admin) as response:
        counters = await response.json()
    return int(counters["requests"].get(endpoint, {}).get("200", 0))


async def get_benchmark(url: str, duration: float, concurrency: int, workflow_id: str) -> list[Result]:
    """Status GETs per second on both status endpoints."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}, connector=connector) as session:
        run_ids = await create_runs(session, url, workflow_id, 50, 3600)
        results = []
        for label, endpoint, make_url in (
            ("GET /v1/runs/{id}", "get_run_status", lambda r: f"{url}/v1/runs/{r}"),
            (
                "GET /v1/workflows/{wid}/runs/{id}",
                "get_run",
                lambda r: f"{url}/v1/workflows/{workflow_id}/runs/{r}",
            ),
        ):
            await measure_gets(session, [make_url(r) for r in run_ids], 0.5, concurrency)  # warm-up
            before = await server_count(session, url, endpoint)
            count, latencies, errors = await measure_gets(
                session, [make_url(r) for r in run_ids], duration, concurrency
            )
            served = await server_count(session, url, endpoint) - before
            if served != count:
                errors.append(f"the client counted {count} answers on {endpoint}, the server {served}")
            latencies.sort()
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(len(latencies) * 0.99)] * 1000
            results.append(
                Result(
                    f"{label} per second ({concurrency} concurrent, p50 {p50:.1f} ms, p99 {p99:.1f} ms)",
                    f"{count / duration:,.0f}",
                    f">= {GET_TARGET:,}",
                    errors[:3],
                )
            )
        for run_id in run_ids:
            async with session.post(f"{url}/v1/runs/{run_id}/stop") as response:
                await response.read()
        return results


async def read_stream(
    session: aiohttp.ClientSession, url: str, all_opened: asyncio.Event, counts: dict[str, int]
) -> str:
    """Read one SSE stream to its end; return 'final', 'no-final' or an error.

    :param all_opened: set once ``counts["with_frames"]`` reaches ``counts["expected"]``.
    """
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as response:
            if response.status != 200:
                return f"HTTP {response.status}"
            got_frame = False
            async for line in response.content:
                if line.startswith(b"data:"):
                    if not got_frame:
                        got_frame = True
                        counts["with_frames"] += 1
                        if counts["with_frames"] == counts["expected"]:
                            all_opened.set()
                    if b'"workflow_status"' in line:
                        return "final"
            return "no-final"
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        return f"{type(error).__name__}: {error}"


async def stream_benchmark(url: str, streams: int, runs: int, workflow_id: str) -> list[Result]:
    """Open ``streams`` SSE streams over ``runs`` slow runs, hold them, stop the runs, check final frames."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}, connector=connector) as session:
        run_ids = await create_runs(session, url, workflow_id, runs, 3600)
        counts = {"with_frames": 0, "expected": streams}
        all_opened = asyncio.Event()
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(
                read_stream(session, f"{url}/v1/runs/{run_ids[i % runs]}/events", all_opened, counts)
            )
            for i in range(streams)
        ]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(all_opened.wait(), 60)
        opened_in = time.perf_counter() - started
        admin = {"X-Emulator-Admin-Token": ADMIN_TOKEN}
        async with session.get(f"{url}/_emulator/counters", headers=admin) as response:
            open_streams = (await response.json())["open_streams"]
        stop_started = time.perf_counter()
        await asyncio.gather(*(session.post(f"{url}/v1/runs/{run_id}/stop") for run_id in run_ids))
        outcomes = await asyncio.gather(*tasks)
        fan_out = time.perf_counter() - stop_started
        finals = outcomes.count("final")
        errors = sorted({o for o in outcomes if o != "final"})
        return [
            Result(
                f"SSE streams open at once (server count; all got frames in {opened_in:.1f} s)",
                f"{open_streams:,}",
                f">= {STREAM_TARGET:,}",
                []
                if counts["with_frames"] == streams
                else [f"only {counts['with_frames']} streams got frames"],
            ),
            Result(
                f"streams that got the final frame after stopping {runs} runs ({fan_out:.1f} s)",
                f"{finals:,} / {streams:,}",
                "all",
                errors[:3],
            ),
        ]


def slow_workflow_id(url: str) -> str:
    """The id of the emulator's ``slow`` workflow."""
    request = urllib.request.Request(
        url + "/_emulator/workflows", headers={"X-Emulator-Admin-Token": ADMIN_TOKEN}
    )
    with urllib.request.urlopen(request) as response:
        workflow_id: str = json.loads(response.read())["slow"]
        return workflow_id


async def run_benchmarks(url: str, quick: bool, workflow_id: str) -> list[Result]:
    """Both benchmarks, one after the other, on runs of the ``slow`` workflow."""
    results = await get_benchmark(url, 3.0 if quick else 10.0, 32, workflow_id)
    results += await stream_benchmark(url, STREAM_TARGET, 100, workflow_id)
    return results


def main() -> int:
    """Run, print the table, exit 1 on errors only."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter GET runs (< 20 s in all)")
    args = parser.parse_args()
    pin_to_core(1)
    started = time.perf_counter()
    with emulator_process(free_port()) as url:
        try:
            import uvloop

            results = uvloop.run(run_benchmarks(url, args.quick, slow_workflow_id(url)))
        except ImportError:
            results = asyncio.run(run_benchmarks(url, args.quick, slow_workflow_id(url)))
    width = max(len(r.name) for r in results)
    print(f"\nNoxus emulator, one process on one core ({os.cpu_count()} cores on the machine)\n")
    print(f"{'measure':<{width}}  {'value':>13}  target")
    for result in results:
        print(f"{result.name:<{width}}  {result.value:>13}  {result.target}")
    errors = [error for result in results for error in result.errors]
    for error in errors:
        print(f"ERROR: {error}")
    print(f"\n{time.perf_counter() - started:.1f} s in all")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
