"""Fault injection through the control API and from start-up options; counters and reset."""

from __future__ import annotations

import json

import pytest
import requests

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.emulator.faults import parse_fault_spec
from emulator.helpers import Api, parse_sse


def status_url(api: Api, run: dict) -> str:
    return api.url(f"/v1/runs/{run['id']}")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_status_fault_answers_the_next_n_requests(api: Api, status: int) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.emu.control.add_fault("get_run_status", "status", status=status, count=2)

    codes = [api.session.get(status_url(api, run)).status_code for _ in range(3)]

    assert codes == [status, status, 200]
    assert api.emu.control.counters()["requests"]["get_run_status"] == {str(status): 2, "200": 1}


def test_429_fault_carries_retry_after(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.emu.control.add_fault("get_run_status", "status", status=429, retry_after=2)

    response = api.session.get(status_url(api, run))

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["x-request-id"]
    assert "detail" in response.json()


def test_fault_on_one_endpoint_leaves_the_others_alone(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.emu.control.add_fault("get_run", "status", status=503)

    assert api.session.get(status_url(api, run)).status_code == 200
    assert api.session.get(api.url(f"/v1/workflows/{run['workflow_id']}/runs/{run['id']}")).status_code == 503


def test_wildcard_fault_until_cleared(api: Api) -> None:
    api.emu.control.add_fault("*", "status", status=502, count=-1)

    codes = [
        api.session.get(api.url(path)).status_code for path in ("/v1/nodes", "/v1/admin/me", "/v1/nodes")
    ]
    api.emu.control.clear_faults()

    assert codes == [502, 502, 502]
    assert api.session.get(api.url("/v1/nodes")).status_code == 200


def test_faults_are_consumed_in_order(api: Api) -> None:
    api.emu.control.add_fault("nodes", "status", status=500)
    api.emu.control.add_fault("nodes", "status", status=503)

    codes = [api.session.get(api.url("/v1/nodes")).status_code for _ in range(3)]

    assert codes == [500, 503, 200]


def test_latency_fault_delays_then_answers(api: Api) -> None:
    api.emu.control.add_fault("nodes", "latency", seconds=0.2)

    response = api.session.get(api.url("/v1/nodes"))

    assert response.status_code == 200
    assert api.emu.control.faults() == []


def test_reset_fault_closes_the_connection_without_an_answer(api: Api) -> None:
    api.emu.control.add_fault("nodes", "reset")

    with pytest.raises(requests.ConnectionError):
        requests.get(api.url("/v1/nodes"), headers={"X-API-Key": api.session.headers["X-API-Key"]})

    assert api.session.get(api.url("/v1/nodes")).status_code == 200
    assert api.emu.control.counters()["requests"]["nodes"] == {"reset": 1, "200": 1}


def test_malformed_fault_sends_a_body_that_is_not_json(api: Api) -> None:
    api.emu.control.add_fault("me", "malformed")

    response = api.session.get(api.url("/v1/admin/me"))

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_drop_stream_fault_closes_the_stream_before_the_final_frame(api: Api) -> None:
    run = api.create_ok("summarize", {"document": "d"})
    api.emu.control.add_fault("run_events", "drop_stream", after_frames=3)

    dropped = [f for f in api.events(run["id"]) if "comment" not in f]
    rest = [f for f in api.events(run["id"], etag=dropped[-1]["redisId"]) if "comment" not in f]

    assert len(dropped) == 3
    assert all("workflow_status" not in frame["data"] for frame in dropped)
    assert rest[-1]["data"]["workflow_status"] == "completed"


def test_sync_timeout_fault_answers_504_at_once_and_the_run_goes_on(api: Api) -> None:
    api.emu.control.add_fault("create_run_sync", "sync_timeout")

    response = api.session.post(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs/sync"), json={"input": {"text": "a"}}
    )

    assert response.status_code == 504
    final = api.wait_final({"id": response.json()["run_id"], "workflow_id": api.wid("echo")})
    assert final["status"] == "completed"


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "nope", "kind": "status"},
        {"endpoint": "get_run", "kind": "explode"},
        {"endpoint": "get_run", "kind": "drop_stream"},
        {"endpoint": "get_run", "kind": "status", "status": 418},
        {"endpoint": "get_run", "kind": "status", "count": 0},
        {"endpoint": "get_run", "kind": "latency", "seconds": "long"},
        {"endpoint": "run_events", "kind": "drop_stream", "after_frames": -1},
    ],
)
def test_bad_faults_are_a_422(api: Api, body: dict) -> None:
    response = requests.post(
        api.url("/_emulator/faults"), json=body, headers={"X-Emulator-Admin-Token": api.emu.admin_token}
    )

    assert response.status_code == 422
    assert api.emu.control.faults() == []


def test_control_api_needs_the_admin_token(api: Api) -> None:
    assert requests.get(api.url("/_emulator/counters")).status_code == 401
    assert (
        requests.post(api.url("/_emulator/reset"), headers={"X-Emulator-Admin-Token": "wrong"}).status_code
        == 401
    )


def test_reset_forgets_runs_files_faults_and_counters(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})
    file_id = api.session.post(api.url("/v1/file"), files={"file": ("a.txt", b"a")}).json()["id"]
    api.emu.control.add_fault("nodes", "status", status=500)

    api.emu.control.reset()

    counters = api.emu.control.counters()
    assert counters["requests"] == {} and counters["runs_created_total"] == 0
    assert api.emu.control.faults() == []
    assert api.session.get(status_url(api, run)).status_code == 404
    assert api.session.get(api.url(f"/v1/file/{file_id}")).status_code == 404


def test_reset_ends_open_streams(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})
    with api.session.get(api.url(f"/v1/runs/{run['id']}/events"), stream=True, timeout=20) as response:
        lines = response.iter_lines(decode_unicode=True)
        next(lines)
        api.emu.control.reset()
        frames = parse_sse(lines)

    assert all("workflow_status" not in frame.get("data", {}) for frame in frames)


def test_counters_count_open_connections(api: Api) -> None:
    api.session.get(api.url("/v1/nodes"))

    assert api.emu.control.counters()["open_connections"] >= 1


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("get_run:status:503:2", {"endpoint": "get_run", "kind": "status", "status": 503, "count": 2}),
        ("get_run:status:429:1:2", {"status": 429, "count": 1, "retry_after": 2.0}),
        ("*:latency:0.5", {"endpoint": "*", "kind": "latency", "seconds": 0.5, "count": 1}),
        ("run_events:drop_stream:3:-1", {"after_frames": 3, "count": -1}),
        ("create_run:reset", {"kind": "reset", "count": 1}),
        ("create_run_sync:sync_timeout:2", {"kind": "sync_timeout", "count": 2}),
    ],
)
def test_fault_specs_of_the_command_line(spec: str, expected: dict) -> None:
    fault = vars(parse_fault_spec(spec))

    assert {key: fault[key] for key in expected} == expected


@pytest.mark.parametrize(
    "spec", ["get_run", "get_run:status:abc", "get_run:reset:1:2", "nodes:drop_stream:1"]
)
def test_bad_fault_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def test_faults_given_at_start_up_apply() -> None:
    with EmulatorServer(faults=[parse_fault_spec("nodes:status:503:1")]) as server:
        headers = {"X-API-Key": server.api_key}
        codes = [requests.get(f"{server.url}/v1/nodes", headers=headers).status_code for _ in range(2)]

    assert codes == [503, 200]
