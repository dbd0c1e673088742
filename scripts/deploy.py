"""The example DAGs in a real multi-process Airflow 3 on loopback, with the UI left up; Ctrl-C stops it all.

Called by ``scripts/deploy.sh`` (``make deploy``). It starts the Noxus emulator and the demo's loopback
file/webhook server, then Airflow (api-server with the UI, dag-processor, scheduler with the
LocalExecutor, triggerer) in an ``AIRFLOW_HOME`` kept under ``~/.cache/airflow-provider-noxus``,
triggers every example DAG once through the REST API, prints a table of results, then prints the UI's
address and waits. Every process it started is stopped, by PID, when it exits (Ctrl-C, SIGTERM, error).

With ``--distributed`` (``scripts/deploy-distributed.sh``, ``make deploy-distributed``) Airflow runs as
production runs it: PostgreSQL and Redis started for it, the CeleryExecutor, two schedulers, two
triggerers and two Celery workers (tests/support/distributed_airflow.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from demo import (  # noqa: E402 - the scripts folder is not a package
    EXAMPLES,
    DagResult,
    dag_conf,
    emulator,
    loopback_files,
    noxus_env,
    print_table,
    short_text,
)

from tests.support.airflow_deployment import AirflowDeployment, free_port  # noqa: E402
from tests.support.distributed_airflow import DistributedAirflowDeployment  # noqa: E402

CACHE = Path.home() / ".cache" / "airflow-provider-noxus"
DEFAULT_HOME = CACHE / "deploy-home"
DEFAULT_DISTRIBUTED_HOME = CACHE / "deploy-distributed-home"
SINGLE_MACHINE_COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")
#: The UI's port when it is free (else any free port).
DEFAULT_UI_PORT = 8080


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def run_seconds(run: dict) -> float:
    """Wall time of a finished DAG run, from the API's start and end dates."""
    start, end = (
        datetime.fromisoformat(run[key].replace("Z", "+00:00")) for key in ("start_date", "end_date")
    )
    return (end - start).total_seconds()


def run_summary(airflow: AirflowDeployment, dag_id: str, run_id: str) -> str:
    """The tasks of a DAG run that did not succeed, else the value its last task returned, shortened."""
    task_instances = airflow.task_instances(dag_id, run_id)
    failed = sorted({ti["task_id"] for ti in task_instances if ti["state"] not in ("success", "skipped")})
    if failed:
        return "failed: " + ", ".join(failed)
    for ti in sorted(task_instances, key=lambda ti: ti["end_date"] or "", reverse=True):
        for entry in airflow.xcom_entries(dag_id, run_id, ti["task_id"]):
            if entry["key"] == "return_value":
                return short_text(json.dumps(entry["value"]))
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="PostgreSQL, Redis, the CeleryExecutor, two schedulers, triggerers and workers",
    )
    parser.add_argument("--home", type=Path, default=os.environ.get("NOXUS_DEPLOY_HOME"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("NOXUS_DEPLOY_PORT", "0")) or None)
    parser.add_argument("--emulator-port", type=int, default=int(os.environ.get("NOXUS_DEMO_PORT", "8765")))
    parser.add_argument("--no-wait", action="store_true", help="stop once the DAGs have run (for CI)")
    args = parser.parse_args()
    # Ctrl-C raises KeyboardInterrupt (even when started in the background, where SIGINT starts ignored);
    # SIGTERM unwinds the same way, so every server started here is stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home: Path = args.home or (DEFAULT_DISTRIBUTED_HOME if args.distributed else DEFAULT_HOME)
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    dag_ids = sorted(path.stem for path in EXAMPLES.glob("noxus_*.py"))
    with (
        loopback_files(EXAMPLES / "data") as files,
        emulator(args.emulator_port, log_dir / "emulator.log") as emulator_url,
    ):
        print(f"Emulator at {emulator_url}. Starting Airflow in {home} (logs in {log_dir}) ...", flush=True)
        started = time.monotonic()
        options: dict[str, Any] = {
            "env": noxus_env(emulator_url),
            "log_dir": log_dir,
            "port": args.port or (DEFAULT_UI_PORT if port_is_free(DEFAULT_UI_PORT) else free_port()),
        }
        deployment = (
            DistributedAirflowDeployment(home, EXAMPLES, startup_timeout=300, **options)
            if args.distributed
            else AirflowDeployment(home, EXAMPLES, components=SINGLE_MACHINE_COMPONENTS, **options)
        )
        with deployment as airflow:
            print(f"Airflow is up in {time.monotonic() - started:.0f} s; triggering {len(dag_ids)} DAGs ...")
            airflow.wait_for_dags(dag_ids)
            run_ids = {dag_id: airflow.trigger_dag(dag_id, dag_conf(dag_id, files)) for dag_id in dag_ids}
            results = []
            for dag_id, run_id in run_ids.items():
                airflow.wait_for_dag_run(dag_id, run_id, timeout=600)
                run = airflow.dag_run(dag_id, run_id)
                summary = run_summary(airflow, dag_id, run_id)
                results.append(DagResult(dag_id, str(run["state"]), run_seconds(run), summary))
            print()
            print_table(results)
            print(
                f"\nAirflow UI: {airflow.api_url}  (no login needed: every visitor is an admin)\n"
                f"Noxus emulator: {emulator_url}  (API key noxus-demo-key; connection noxus_default)\n"
                f"Logs: {log_dir}"
            )
            if args.no_wait:
                return 0 if all(r.state == "success" for r in results) else 1
            print("Press Ctrl-C to stop everything.", flush=True)
            while True:
                airflow.check_running()
                time.sleep(2)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nStopped.")
        sys.exit(130)
