"""An endpoint that answers 404 until a Noxus run is final: what ``HttpSensorTrigger`` waits on.

Airflow's ``HttpSensorTrigger`` (configuration 5 of the trigger benchmark) fires on the first answer
that is not a 404. The Noxus API has no such endpoint, so this tiny aiohttp app stands in front of the
emulator: ``GET /runs/<run_id>`` reads ``GET /v1/runs/<run_id>`` from the emulator (one status check
there, counted by the emulator like any other) and answers 200 once the run is final, else 404.

Run it in its own process: ``python benchmarks/status_proxy.py --emulator-url URL --api-key KEY``;
it prints ``ready <port>`` when it listens, and ``GET /_proxy/counters`` tells how often the emulator
could not be read (those answers are 404s too, so the sensor keeps waiting instead of spinning).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
from aiohttp import web

FINAL_STATUSES = frozenset({"completed", "failed", "stopped"})


def build_app(emulator_url: str, api_key: str) -> web.Application:
    """The proxy app, with one shared client session to the emulator for its whole life.

    :param emulator_url: the emulator's base URL.
    :param api_key: the emulator key sent as ``X-API-Key``.
    """
    app = web.Application()
    counters = {"checks": 0, "upstream_errors": 0}

    async def open_session(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            base_url=emulator_url,
            headers={"X-API-Key": api_key},
            connector=aiohttp.TCPConnector(limit=100),
        )

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def run_done(request: web.Request) -> web.Response:
        counters["checks"] += 1
        try:
            async with request.app["session"].get(f"/v1/runs/{request.match_info['run_id']}") as upstream:
                upstream.raise_for_status()
                run = await upstream.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            counters["upstream_errors"] += 1
            return web.json_response({"detail": "emulator not readable"}, status=404)
        if run.get("status") in FINAL_STATUSES:
            return web.json_response({"status": run["status"]})
        return web.json_response({"status": run.get("status")}, status=404)

    async def read_counters(request: web.Request) -> web.Response:
        return web.json_response(counters)

    app.router.add_get("/runs/{run_id}", run_done)
    app.router.add_get("/_proxy/counters", read_counters)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


async def serve(emulator_url: str, api_key: str, port: int) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT; print ``ready <port>`` once listening."""
    runner = web.AppRunner(build_app(emulator_url, api_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    _host, bound_port = runner.addresses[0][:2]
    print(f"ready {bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.emulator_url, args.api_key, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
