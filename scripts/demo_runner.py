"""Run ``airflow dags test`` of several DAGs side by side, Airflow imported once (``scripts/demo.py``).

Reads the jobs from stdin, a JSON list of ``{"dag_id", "db", "log", "argv"}``; imports Airflow's CLI and
the modules every ``dags test`` needs; then forks one child per job. A child points Airflow's ORM at its
own SQLite file (``db``), sends its output to ``log`` and runs the CLI command ``argv``. The children
share what was imported and built here (copy-on-write) instead of each importing Airflow and building
the in-process Execution API anew, which was most of a ``dags test``'s CPU time: the 7 examples took
78 s of CPU as separate processes, 18 s forked from here. On 2 cores that decides how long they take
side by side.

Writes one JSON line per finished job to stdout: ``{"dag_id", "exit", "seconds", "timed_out"}``. A job
still running after ``--timeout`` seconds is stopped (SIGTERM, SIGKILL 10 s later). The environment
(``AIRFLOW_HOME``, connections, ...) is the caller's; the children stay in this process's group.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

#: How long a child gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 10.0


@dataclass
class Child:
    """A forked ``dags test``."""

    dag_id: str
    pid: int
    started: float
    terminated_at: float | None = None


def warm_up() -> Any:
    """Import what every ``dags test`` of the examples imports; return Airflow's CLI parser module."""
    # the in-process Execution API, the CLI, the task SDK and what the example DAGs import
    import airflow.api_fastapi.execution_api.app
    import airflow.cli.commands.dag_command
    import airflow.sdk
    import airflow.sdk.execution_time.supervisor
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    from airflow.cli import cli_parser

    import airflow_provider_noxus.operators.noxus
    import airflow_provider_noxus.sensors.noxus  # noqa: F401

    warm_execution_api()
    return cli_parser


def warm_execution_api() -> None:
    """Build the in-process Execution API that ``dags test`` tasks talk to, and let it generate its
    versioned routes (cadwyn does that on the first request: seconds of CPU) by sending it one request
    here, in this loop, with no thread left behind. The children fork with it ready."""
    import asyncio

    import httpx
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app

    async def first_request() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as client:
            await client.get("/execution/")

    asyncio.run(first_request())


def run_child(cli_parser: Any, job: dict[str, Any]) -> int:
    """In the forked child: own DB, own log, then the CLI command. Returns the exit code."""
    from airflow import settings

    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    url = f"sqlite:///{job['db']}"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    settings.SQL_ALCHEMY_CONN = url
    settings.configure_orm()  # a new engine on this job's DB (the parent opened no connection)
    try:
        args = cli_parser.get_parser().parse_args(job["argv"])
        args.func(args)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0


def fork_all(cli_parser: Any, jobs: list[dict[str, Any]], results: TextIO) -> list[Child]:
    children = []
    for job in jobs:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                results.close()
                code = run_child(cli_parser, job)
            finally:
                os._exit(code)
        children.append(Child(job["dag_id"], pid, time.monotonic()))
    return children


def wait_all(children: list[Child], timeout_s: float, results: TextIO) -> None:
    """Report each child when it ends; stop the ones past ``timeout_s``."""
    running = {child.pid: child for child in children}
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid in running:
            child = running.pop(pid)
            report(child, os.waitstatus_to_exitcode(status), results)
            continue
        now = time.monotonic()
        for child in running.values():
            if child.terminated_at is None and now - child.started > timeout_s:
                os.kill(child.pid, signal.SIGTERM)
                child.terminated_at = now
            elif child.terminated_at is not None and now - child.terminated_at > KILL_GRACE_S:
                os.kill(child.pid, signal.SIGKILL)
        time.sleep(0.1)


def report(child: Child, exit_code: int, results: TextIO) -> None:
    seconds = time.monotonic() - child.started
    line = {
        "dag_id": child.dag_id,
        "exit": exit_code,
        "seconds": round(seconds, 2),
        "timed_out": child.terminated_at is not None,
    }
    print(json.dumps(line), file=results, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, required=True, help="seconds one job may take")
    args = parser.parse_args()
    jobs = json.load(sys.stdin)
    # Results go to the original stdout; whatever Airflow prints goes to stderr (the runner's log).
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    cli_parser = warm_up()
    wait_all(fork_all(cli_parser, jobs, results), args.timeout, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
