"""airflow_provider_noxus.worker_preload: a task process forked from a worker that imported it loads
nothing more of the provider or its HTTP client to create a run and defer.

Each check runs a fresh interpreter, as a forked task process starts with what its worker imported:
Airflow's DAG imports, then (or not) the preload module; then it runs a NoxusRunOperator against the
emulator until it defers, and lists the modules that execution imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

#: What the worker's execution of a Noxus task may need: the provider and its sync HTTP client.
WATCHED = (
    "airflow_provider_noxus",
    "requests",
    "urllib3",
    "charset_normalizer",
    "idna",
    "certifi",
    "tenacity",
)

TASK_PROCESS = """
import json, sys
{preload}
before = set(sys.modules)
from airflow_provider_noxus.operators.noxus import NoxusRunOperator

class TaskInstance:
    try_number, max_tries, start_date = 1, 0, None
    def xcom_push(self, key, value):
        pass

class Store(dict):
    def set(self, key, value, **kwargs):
        self[key] = value

task = NoxusRunOperator(task_id="t", workflow_id={workflow!r}, inputs={{"text": "hi"}})
try:
    task.execute({{"ti": TaskInstance(), "task_state_store": Store()}})
except BaseException as raised:
    assert type(raised).__name__ == "TaskDeferred", repr(raised)
else:
    raise AssertionError("the task did not defer")
watched = {watched!r}
new = set(sys.modules) - before
print(json.dumps(sorted(m for m in new if m.split(".")[0] in watched)))
"""


def modules_a_deferral_imports(emulator: Any, *, preloaded: bool) -> list[str]:
    """The watched modules a fresh task process imports to create a run and defer."""
    dag_imports = "import airflow.sdk" if AIRFLOW_V_3_0_PLUS else "import airflow.models.dag"
    preload = f"{dag_imports}\nimport airflow_provider_noxus.worker_preload" if preloaded else dag_imports
    code = TASK_PROCESS.format(
        preload=preload, workflow=emulator.control.workflow_id("echo"), watched=WATCHED
    )
    connection = {"conn_type": "noxus", "host": emulator.url, "password": emulator.api_key}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(sys.path),
            AIRFLOW_CONN_NOXUS_DEFAULT=json.dumps(connection),
        ),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_after_the_preload_a_task_process_imports_nothing_of_the_provider_to_defer(
    noxus_emulator: Any,
) -> None:
    assert modules_a_deferral_imports(noxus_emulator, preloaded=True) == []


def test_without_it_the_task_process_loads_the_provider_and_its_http_client(noxus_emulator: Any) -> None:
    """What the preload spares: the same execution in a worker that did not import it."""
    imported = modules_a_deferral_imports(noxus_emulator, preloaded=False)
    assert "airflow_provider_noxus.operators.noxus" in imported
    assert "airflow_provider_noxus.hooks._transport.requests_transport" in imported
    if AIRFLOW_V_3_0_PLUS:  # Airflow 2 itself imports requests already
        assert "requests" in imported
    assert "airflow_provider_noxus.triggers.noxus" in imported


def test_the_celery_configuration_is_airflows_default_plus_the_preload() -> None:
    pytest.importorskip("airflow.providers.celery")
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from airflow_provider_noxus import worker_preload

    config = worker_preload.CELERY_CONFIG
    assert config["imports"][-1] == "airflow_provider_noxus.worker_preload"
    assert {k: v for k, v in config.items() if k != "imports"} == {
        k: v for k, v in DEFAULT_CELERY_CONFIG.items() if k != "imports"
    }
    with pytest.raises(AttributeError, match="NOT_THERE"):
        worker_preload.NOT_THERE  # noqa: B018
