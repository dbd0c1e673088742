"""Workflow fixture files, the command line, and the emulator started as a process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from support.waiting import wait_until

from airflow_provider_noxus.emulator import DEMO_API_KEY, EmulatorServer
from airflow_provider_noxus.emulator.cli import build_parser, settings_from_args
from airflow_provider_noxus.emulator.workflows import load_workflows_file

TRANSLATE = {
    "name": "translate",
    "inputs": [
        {"label": "text", "type": "string", "required": True},
        {"label": "style", "type": "string", "default": "plain"},
    ],
    "nodes": [
        {"name": "Translate", "kind": "llm", "seconds": 0.1, "text": "Bonjour {text}"},
        {"name": "Polish", "kind": "step", "seconds": 0.05},
    ],
    "outputs": {"translation": "{nodes.Translate}", "style": "{style}", "fixed": 3},
}


def test_workflows_file_adds_a_workflow_that_runs(tmp_path: Path) -> None:
    path = tmp_path / "workflows.json"
    path.write_text(json.dumps({"workflows": [TRANSLATE]}))

    with EmulatorServer(workflows_file=path) as server:
        workflow_id = server.control.workflow_id("translate")
        response = requests.post(
            f"{server.url}/v1/workflows/{workflow_id}/runs/sync",
            json={"input": {"text": "Alice"}},
            headers={"X-API-Key": server.api_key},
        )
        listed = requests.get(f"{server.url}/v1/workflows", headers={"X-API-Key": server.api_key}).json()

    assert response.status_code == 200
    assert response.json()["output"] == {"translation": "Bonjour Alice", "style": "plain", "fixed": 3}
    assert listed["total"] == 7


def test_yaml_workflows_file(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump([TRANSLATE]))

    [workflow] = load_workflows_file(path)

    assert workflow.name == "translate"
    assert [i.label for i in workflow.inputs] == ["text", "style"]
    assert workflow.inputs[1].required is False


def test_workflow_ids_are_stable_across_loads(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps([TRANSLATE]))

    assert load_workflows_file(path)[0] == load_workflows_file(path)[0]


def test_a_file_workflow_replaces_a_builtin_of_the_same_name(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps([{**TRANSLATE, "name": "echo"}]))

    with EmulatorServer(workflows_file=path) as server:
        listed = requests.get(f"{server.url}/v1/workflows", headers={"X-API-Key": server.api_key}).json()

    assert listed["total"] == 6
    echo = next(item for item in listed["items"] if item["name"] == "echo")
    assert [i["label"] for i in echo["inputs"]] == ["text", "style"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"workflows": "nope"}, "expected a list"),
        ([{"inputs": []}], "non-empty 'name'"),
        ([{"name": "w", "inputs": [{"label": "x", "type": "matrix"}]}], "unknown type"),
        ([{"name": "w", "nodes": [{"name": "n", "kind": "teleport"}]}], "unknown kind"),
        ([{"name": "w"}, {"name": "w", "id": "other"}], "unique"),
    ],
)
def test_bad_workflows_files_say_what_is_wrong(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(content))

    with pytest.raises(ValueError, match=message):
        EmulatorServer(workflows_file=path)


def test_cli_options_and_env_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOXUS_EMULATOR_API_KEYS", "env-1, env-2")
    args = build_parser().parse_args(
        [
            "--api-key",
            "cli-1",
            "--allow-loopback-urls",
            "--sync-hold-seconds",
            "5",
            "--keep-alive-seconds",
            "2",
            "--feedback-delay",
            "0.5",
            "--fault",
            "get_run:status:503:2",
        ]
    )

    settings = settings_from_args(args)

    assert settings.effective_api_keys == ["cli-1", "env-1", "env-2"]
    assert (settings.allow_loopback_urls, settings.sync_hold_seconds, settings.keep_alive_seconds) == (
        True,
        5,
        2,
    )
    assert settings.feedback_delay == 0.5
    assert [(f.endpoint, f.kind, f.status, f.count) for f in settings.faults] == [
        ("get_run", "status", 503, 2)
    ]


def test_cli_help_documents_faults_and_workflows() -> None:
    text = build_parser().format_help()

    assert "get_run:status:503:2" in text
    assert "--workflows" in text and "--fault" in text


def test_emulator_as_a_process_prints_its_url_and_demo_key() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_noxus.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        response = requests.get(f"{url}/v1/admin/me", headers={"X-API-Key": DEMO_API_KEY})
    finally:
        process.terminate()
        process.wait(10)

    assert DEMO_API_KEY in line
    assert response.status_code == 200
    assert process.returncode == 0


def test_bad_option_exits_with_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_noxus.emulator", "--fault", "get_run:teleport"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "unknown kind" in result.stderr


def test_stopping_the_server_ends_open_streams_and_held_sync_creates() -> None:
    server = EmulatorServer(sync_hold_seconds=60).start()
    headers = {"X-API-Key": server.api_key}
    slow = server.control.workflow_id("slow")
    run = requests.post(
        f"{server.url}/v1/workflows/{slow}/runs", json={"input": {"seconds": 60}}, headers=headers
    )
    held: list[requests.Response] = []
    sync = threading.Thread(
        target=lambda: held.append(
            requests.post(
                f"{server.url}/v1/workflows/{slow}/runs/sync",
                json={"input": {"seconds": 60}},
                headers=headers,
            )
        )
    )
    with requests.get(
        f"{server.url}/v1/runs/{run.json()['id']}/events", headers=headers, stream=True
    ) as stream:
        lines = stream.iter_lines()
        next(lines)
        sync.start()
        wait_until(lambda: server.control.counters()["runs_created_total"] == 2)
        server.stop()
        rest = list(lines)
    sync.join(30)

    assert all(b"workflow_status" not in line for line in rest)
    assert [response.status_code for response in held] == [503]
