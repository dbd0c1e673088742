"""One emulator and one distributed Airflow 3 for the whole module (see tests/support/distributed_airflow.py):
PostgreSQL, Redis, the CeleryExecutor, an api-server, a dag-processor, two schedulers, two triggerers and
two Celery workers, on the DAGs of tests/e2e/dags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.distributed_airflow import DistributedAirflowDeployment

from airflow_provider_noxus.emulator import EmulatorServer

E2E_DAGS = Path(__file__).resolve().parents[1] / "e2e" / "dags"
#: A distinctive API key: the secret scan looks for it everywhere Airflow writes.
SECRET_KEY = "nxk-dist-Sup3rSecret-K8vQ2mW5tZ"
#: The Celery queue of tests/e2e/dags/e2e_worker_crash.py: only worker-1 consumes it (and, once a test
#: kills worker-1, the replacement it starts).
CRASH_QUEUE = "crash"
#: Seconds without a heartbeat after which a triggerer's triggers move to a live one (Airflow: 30).
#: Lower makes the takeover test quicker, but not 10: a busy 3.3.2 triggerer heartbeats up to ~12 s
#: apart (measured), and two live triggerers then take each other's triggers, calling on_kill on them
#: (apache/airflow#73454), which stops their Noxus runs.
TRIGGERER_HEALTH_CHECK_THRESHOLD = 20
#: Seconds without a heartbeat after which a running task is failed and retried (Airflow: 300).
TASK_HEARTBEAT_TIMEOUT = 30


@pytest.fixture(scope="module")
def secret_key() -> str:
    """The API key given to Airflow: it may appear nowhere Airflow writes."""
    return SECRET_KEY


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_keys=[SECRET_KEY], allow_loopback_urls=True) as server:
        yield server


@pytest.fixture(scope="module")
def airflow(
    emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DistributedAirflowDeployment]:
    """The distributed deployment; ``worker-1`` also consumes the ``crash`` queue.

    Component and task logs go to ``$NOXUS_E2E_LOG_DIR/distributed`` when that is set (CI keeps them).
    """
    home = tmp_path_factory.mktemp("airflow-distributed")
    root = os.environ.get("NOXUS_E2E_LOG_DIR")
    log_dir = Path(root) / "distributed" if root else home / "logs"
    env = {
        "AIRFLOW_CONN_NOXUS_DEFAULT": json.dumps(
            {"conn_type": "noxus", "host": emulator.url, "password": SECRET_KEY}
        ),
        "AIRFLOW_VAR_NOXUS_E2E_SLOW_WORKFLOW": emulator.control.workflow_id("slow"),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # How often a scheduler adopts the tasks of a dead one (Airflow: 300 s).
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
    }
    with DistributedAirflowDeployment(
        home,
        E2E_DAGS,
        env,
        log_dir=log_dir,
        worker_queues={"worker-1": f"default,{CRASH_QUEUE}"},
        startup_timeout=300,
    ) as deployment:
        yield deployment
