"""One emulator and one real multi-process Airflow 3 for the whole e2e module (see tests/support)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.airflow_deployment import AirflowDeployment

from airflow_provider_noxus.emulator import EmulatorServer

E2E_DAGS = Path(__file__).resolve().parent / "dags"
#: Distinctive API keys: the secret scan looks for them everywhere Airflow writes.
SECRET_KEY = "nxk-e2e-Sup3rSecret-7Qm2vX9pL4"
WRONG_KEY = "nxk-e2e-WrongKey-3Hd8sK1zR6"


@pytest.fixture(scope="module")
def secret_keys() -> tuple[str, ...]:
    """Every API key given to Airflow in this module; none may appear anywhere Airflow writes."""
    return (SECRET_KEY, WRONG_KEY)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_keys=[SECRET_KEY], allow_loopback_urls=True) as server:
        yield server


@pytest.fixture(scope="module")
def airflow(
    emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowDeployment]:
    """Airflow 3 (api-server, scheduler, triggerer; DAGs serialized once) on the e2e DAGs.

    Component and task logs go to ``$NOXUS_E2E_LOG_DIR`` when set (CI keeps them as artifacts).
    """
    home = tmp_path_factory.mktemp("airflow-e2e")
    log_dir = Path(os.environ["NOXUS_E2E_LOG_DIR"]) if os.environ.get("NOXUS_E2E_LOG_DIR") else home / "logs"
    env = {
        "AIRFLOW_CONN_NOXUS_DEFAULT": json.dumps(
            {"conn_type": "noxus", "host": emulator.url, "password": SECRET_KEY}
        ),
        "AIRFLOW_CONN_NOXUS_WRONG_KEY": json.dumps(
            {"conn_type": "noxus", "host": emulator.url, "password": WRONG_KEY}
        ),
        "AIRFLOW_VAR_NOXUS_E2E_SLOW_WORKFLOW": emulator.control.workflow_id("slow"),
        # A killed triggerer's triggers move to a live one once its heartbeat is this old.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    }
    with AirflowDeployment(home, E2E_DAGS, env, log_dir=log_dir, parallelism=4) as deployment:
        yield deployment
