"""Nothing of the provider imports OpenLineage unless the OpenLineage provider asks for facets.

The operator and sensor import :mod:`airflow_provider_noxus.openlineage` only inside
``get_openlineage_facets_on_complete``, which only the OpenLineage provider calls. A subprocess
imports every module of the package except that one, runs an operator and a sensor to the end
against the emulator, and lists what got imported. Runs on both Airflow versions (3.3.2 has the
OpenLineage provider installed; 2.11.2 does not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import requests

SCRIPT = r"""
import json, pkgutil, sys
import airflow_provider_noxus

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

# The event trigger refuses to import before Airflow 3 (by design: a clear error at import).
skipped = {"airflow_provider_noxus.openlineage"} | (
    set() if AIRFLOW_V_3_0_PLUS else {"airflow_provider_noxus.triggers.events"}
)
modules = [
    m.name for m in pkgutil.walk_packages(airflow_provider_noxus.__path__, "airflow_provider_noxus.")
    if m.name not in skipped
]
for name in modules:
    __import__(name)

from support.noxus_tasks import make_context, run_task
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor

workflow_id = sys.argv[1]
operator = NoxusRunOperator(task_id="run", workflow_id=workflow_id, inputs={"text": "x"}, poll_interval=0.2)
created = run_task(operator, make_context())
sensor = NoxusRunSensor(task_id="wait", workflow_id=workflow_id, run_id=sys.argv[2], poll_interval=0.2)
waited = run_task(sensor, make_context())
# Airflow's providers manager imports every installed provider's package and provider info (the
# OpenLineage provider's too, where it is installed): what must stay out is the OpenLineage client,
# the OpenLineage provider's code and our facet module.
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] == "openlineage"
    or m == "airflow_provider_noxus.openlineage"
    or (m.startswith("airflow.providers.openlineage.") and not m.endswith(".get_provider_info"))
)
print(json.dumps({"modules": len(modules), "created": created, "waited": waited, "openlineage": loaded}))
"""


def test_nothing_imports_openlineage(noxus_connection: Any) -> None:
    emulator = noxus_connection
    echo = emulator.control.workflow_id("echo")
    run = _create_run(emulator, echo)  # the run the sensor waits for
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
    }

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, echo, run], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] > 10
    assert result["created"] == {"text": "x"} and result["waited"] == {"text": "now"}
    assert result["openlineage"] == []
    assert emulator.control.counters()["runs_created_total"] == 2


def _create_run(emulator: Any, workflow_id: str) -> str:
    response = requests.post(
        f"{emulator.url}/v1/workflows/{workflow_id}/runs",
        headers={"X-API-Key": emulator.api_key},
        json={"input": {"text": "now"}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])
