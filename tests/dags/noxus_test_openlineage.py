"""OpenLineage of a Noxus run (tests/openlineage/): file inputs as a URL, an uploaded spot:// file and a
local file, then a sensor on the same run. The test gives the ids and locations through the environment."""

from __future__ import annotations

import os

from _noxus_test_common import DAG, FAST, START_DATE

from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor

WORKFLOW_ID = os.environ.get("NOXUS_TEST_LINEAGE_WORKFLOW_ID", "lineage")

with DAG(dag_id="noxus_test_openlineage", schedule=None, start_date=START_DATE, catchup=False):
    read = NoxusRunOperator(
        task_id="read",
        workflow_id=WORKFLOW_ID,
        inputs={
            "document": NoxusFile.from_url(
                os.environ.get("NOXUS_TEST_LINEAGE_URL", "https://example.com/a.txt")
            ),
            "appendix": NoxusFile.from_spot(os.environ.get("NOXUS_TEST_LINEAGE_SPOT", "spot://none")),
            "notes": NoxusFile.from_path(os.environ.get("NOXUS_TEST_LINEAGE_PATH", __file__)),
            "question": "What changed?",
        },
        workflow_version_id=os.environ.get("NOXUS_TEST_LINEAGE_VERSION_ID"),
        allow_private_file_urls=True,
        **FAST,
    )
    wait = NoxusRunSensor(
        task_id="wait",
        run_id="{{ ti.xcom_pull(task_ids='read', key='run_id') }}",
        workflow_id=WORKFLOW_ID,
        **FAST,
    )
    read >> wait
