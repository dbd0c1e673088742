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
from support.noxus_tasks import use_fast_connection

pytest.importorskip("airflow.providers.openlineage", reason="apache-airflow-providers-openlineage is absent")

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.emulator.workflows import parse_workflow
from airflow_provider_noxus.files import NoxusFile, resolve_file_inputs
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.openlineage import api_namespace, file_datasets
from airflow_provider_noxus.run_identity import intent_fingerprint

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


@pytest.mark.parametrize(
    ("uri", "located"),
    [
        # User info, ;params of any segment (a session id), query and fragment are dropped.
        (
            "https://reader:pw@files.example.com/q3;v=2/report.pdf;jsessionid=A1B2?X-Sig=s#p2",
            ("https://files.example.com", "/q3/report.pdf"),
        ),
        # The same address written another way is one dataset.
        (
            "HTTPS://Files.Example.COM.:443/q3/./draft/../report.pdf",
            ("https://files.example.com", "/q3/report.pdf"),
        ),
        ("http://files.example.com:80", ("http://files.example.com", "/")),
        ("http://files.example.com:8080/a.pdf", ("http://files.example.com:8080", "/a.pdf")),
        ("http://[2001:DB8::1]:8443/r.pdf;token=t", ("http://[2001:db8::1]:8443", "/r.pdf")),
        # An encoded semicolon is part of the name, not a parameter; escapes are written one way.
        ("https://files.example.com/a%3bb.pdf", ("https://files.example.com", "/a%3Bb.pdf")),
        (
            "https://files.example.com/%7Eq3/%2E/r%65port.pdf",
            ("https://files.example.com", "/~q3/report.pdf"),
        ),
        # No public name: a bad port, no host, another scheme.
        ("https://files.example.com:99999/a.pdf", None),
        ("https:///a.pdf", None),
        ("ftp://files.example.com/a.pdf", None),
    ],
)
def test_dataset_names_drop_what_holds_secrets_or_varies_per_request(
    uri: str, located: tuple[str, str] | None
) -> None:
    datasets = file_datasets({"doc": {"uri": uri}}, "noxus://api.example.com")
    assert [(d.namespace, d.name) for d in datasets] == ([located] if located else [])


def test_default_port_of_the_api_is_not_part_of_its_namespace() -> None:
    assert api_namespace("https://key@API.noxus.ai:443/") == api_namespace("https://api.noxus.ai")
    assert api_namespace("http://[::1]:8000") == "noxus://[::1]:8000"


def test_a_stored_file_is_named_alike_by_the_run_input_lineage_and_the_run_identity(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the spot:// reference is written, the run gets the upload's URI, lineage names that
    file, and the task's intent (which decides reattaching) is the same."""
    use_fast_connection(monkeypatch, noxus_emulator)
    hook = NoxusHook()
    uploaded = hook.upload_file(b"appendix", filename="appendix.txt")
    namespace = api_namespace(hook.base_url)

    def named(reference: str) -> tuple[str, list[tuple[str, str]], str]:
        inputs = {"doc": NoxusFile.from_spot(reference)}
        return (
            resolve_file_inputs(inputs, hook=hook)["doc"]["uri"],
            [(d.namespace, d.name) for d in file_datasets(inputs, namespace)],
            intent_fingerprint(
                "wf",
                inputs,
                workflow_version_id=None,
                node_ids=None,
                callback_url=None,
                use_sync_endpoint=False,
            ),
        )

    expected = named(uploaded["uri"])
    assert expected[:2] == (uploaded["uri"], [(namespace, f"files/{uploaded['id']}")])
    for written in (uploaded["id"], f"  {uploaded['uri']}/ ", f"SPOT://{uploaded['id']}"):
        assert named(written) == expected, written
    assert named("spot://another-file")[2] != expected[2]


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
