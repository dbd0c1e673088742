"""OpenLineage facets of Noxus runs, emitted by Airflow's OpenLineage provider (extra ``openlineage``).

``airflow dags test`` runs tests/dags/noxus_test_openlineage.py against an emulator with a workflow
that takes three file inputs; the OpenLineage provider writes its events to a file (file transport),
which the test reads back. Skipped where the provider is not installed (the Airflow 2.11.2 venv);
tests/openlineage/test_without_openlineage.py covers that side.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.loopback import serving

pytest.importorskip("airflow.providers.openlineage", reason="apache-airflow-providers-openlineage is absent")

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.emulator.workflows import parse_workflow
from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.openlineage import api_namespace, file_datasets

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
#: Distinctive secrets that must appear in no event: the API key, URL credentials and a URL signature.
API_KEY = "lineage-test-api-key-5f2c9a71"
URL_PASSWORD = "url-password-93d1"
URL_SIGNATURE = "url-signature-4b7e"
VERSION_ID = "6f1c2b7e-2d4a-4e0b-9a3f-0c5d8e7b1a22"
LINEAGE_WORKFLOW = {
    "name": "lineage",
    "inputs": [
        {"label": "document", "type": "file", "required": True},
        {"label": "appendix", "type": "file", "required": True},
        {"label": "notes", "type": "file", "required": True},
        {"label": "question", "type": "string", "required": True},
    ],
    "nodes": [{"name": "Read", "kind": "step", "seconds": 0.1}],
    "outputs": {"document": "{document.name}", "appendix": "{appendix.size}", "notes": "{notes.size}"},
}


def test_file_datasets_name_urls_and_spot_files_without_secrets() -> None:
    namespace = api_namespace("https://key-in-userinfo@backend.noxus.ai:8443/")
    inputs = {
        "report": NoxusFile.from_url(
            f"https://reader:{URL_PASSWORD}@files.example.com/q3/report.pdf?sig=x#p2"
        ),
        "again": {"uri": "https://files.example.com/q3/report.pdf?other=query"},
        "pages": [NoxusFile.from_spot("spot://0f6d1"), NoxusFile.from_spot("7aa2")],
        "inline": {"uri": "data:text/plain;base64,aGk=", "name": "hi.txt"},
        "local": NoxusFile.from_path("/data/contract.pdf"),
        "content": NoxusFile.from_bytes(b"bytes", name="b.txt"),
        "question": "https://not-a-file.example.com/plain-string",
    }

    located = [(d.namespace, d.name) for d in file_datasets(inputs, namespace)]

    assert namespace == "noxus://backend.noxus.ai:8443"
    assert located == [
        ("https://files.example.com", "/q3/report.pdf"),
        ("noxus://backend.noxus.ai:8443", "files/0f6d1"),
        ("noxus://backend.noxus.ai:8443", "files/7aa2"),
    ]


class ReportHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a small text file."""

    def do_GET(self) -> None:
        body = b"quarterly report"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    """A loopback server for the URL file input."""
    with serving(ReportHandler) as url:
        yield url


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(
        api_keys=[API_KEY], allow_loopback_urls=True, workflows=[parse_workflow(LINEAGE_WORKFLOW)]
    ) as server:
        yield server


def run_dag_with_lineage(
    tmp_path: Path, emulator: EmulatorServer, file_server: str
) -> tuple[list[dict[str, Any]], str, str]:
    """``airflow dags test`` of the lineage DAG with OpenLineage writing to a file.

    :return: the events, the spot:// URI given as ``appendix``, and the events file's raw text.
    """
    upload = requests.post(
        f"{emulator.url}/v1/file",
        headers={"X-API-Key": API_KEY},
        files={"file": ("appendix.txt", b"appendix")},
        timeout=30,
    )
    assert upload.status_code == 200, upload.text
    spot = upload.json()["uri"]
    notes = tmp_path / "notes.txt"
    notes.write_text("local notes")
    events_file = tmp_path / "openlineage-events.jsonl"
    home = tmp_path / "airflow-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENLINEAGE"))}
    host = file_server.removeprefix("http://")
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__OPENLINEAGE__NAMESPACE="noxus-provider-tests",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        AIRFLOW_CONN_NOXUS_DEFAULT=json.dumps(
            {"conn_type": "noxus", "host": emulator.url, "password": API_KEY, "extra": {"retry_attempts": 2}}
        ),
        NOXUS_TEST_LINEAGE_WORKFLOW_ID=emulator.control.workflow_id("lineage"),
        NOXUS_TEST_LINEAGE_URL=f"http://reader:{URL_PASSWORD}@{host}/reports/q3.txt?X-Signature={URL_SIGNATURE}#p2",
        NOXUS_TEST_LINEAGE_SPOT=spot,
        NOXUS_TEST_LINEAGE_VERSION_ID=VERSION_ID,
        NOXUS_TEST_LINEAGE_PATH=str(notes),
    )
    for command in (["db", "migrate"], ["dags", "test", "noxus_test_openlineage"]):
        done = subprocess.run(
            [AIRFLOW, *command], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    raw = events_file.read_text()
    return [json.loads(line) for line in raw.splitlines() if line.strip()], spot, raw


def test_operator_and_sensor_emit_the_noxus_run_and_its_file_datasets(
    tmp_path: Path, emulator: EmulatorServer, file_server: str
) -> None:
    events, spot, raw = run_dag_with_lineage(tmp_path, emulator, file_server)
    complete = {
        event["job"]["name"].rsplit(".", 1)[-1]: event for event in events if event["eventType"] == "COMPLETE"
    }
    assert {"read", "wait"} <= set(complete), [(e["eventType"], e["job"]["name"]) for e in events]
    workflow_id = emulator.control.workflow_id("lineage")
    namespace = f"noxus://{emulator.url.removeprefix('http://')}"

    read = complete["read"]
    facet = read["run"]["facets"]["noxusRun"]
    run_id = facet["runId"]
    assert emulator.control.run(run_id)["status"] == "completed"  # the run the task really made
    assert (facet["workflowId"], facet["workflowVersionId"]) == (workflow_id, VERSION_ID)
    assert facet["runUrl"].endswith(f"/workflows/{workflow_id}/runs/{run_id}")
    assert read["run"]["facets"]["externalQuery"]["externalQueryId"] == run_id
    assert read["run"]["facets"]["externalQuery"]["source"] == namespace
    file_host = file_server.removeprefix("http://")
    assert [(d["namespace"], d["name"]) for d in read["inputs"]] == [
        (f"http://{file_host}", "/reports/q3.txt"),
        (namespace, f"files/{spot.removeprefix('spot://')}"),
    ]

    wait = complete["wait"]
    assert wait["run"]["facets"]["noxusRun"]["runId"] == run_id
    assert "workflowVersionId" not in wait["run"]["facets"]["noxusRun"]  # the sensor does not know it
    assert wait["run"]["facets"]["externalQuery"]["externalQueryId"] == run_id
    assert wait["inputs"] == []

    for secret in (API_KEY, URL_PASSWORD, URL_SIGNATURE):
        assert secret not in raw
