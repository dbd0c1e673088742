"""Webhooks: the run object POSTed to ``callback_url`` when the run ends, up to 3 tries, address rules."""

from __future__ import annotations

import pytest
import requests
from support.waiting import wait_until

from airflow_provider_noxus.emulator import EmulatorServer
from emulator.helpers import Api, LocalWebServer


def deliveries(api: Api) -> list[dict]:
    found: list[dict] = api.emu.control.counters()["webhook_deliveries"]
    return found


def test_webhook_posts_the_final_run_with_its_output(api: Api, web_server: LocalWebServer) -> None:
    run = api.create_ok("echo", {"text": "hook"}, callback_url=f"{web_server.url}/hook")

    [record] = wait_until(lambda: deliveries(api))

    assert record == {
        "url": f"{web_server.url}/hook",
        "run_id": run["id"],
        "status": 200,
        "attempts": 1,
        "ok": True,
    }
    [payload] = web_server.received
    assert payload["id"] == run["id"]
    assert payload["status"] == "completed"
    assert payload["output"] == {"text": "hook"}


@pytest.mark.parametrize(
    ("workflow", "inputs", "status"), [("fail", {}, "failed"), ("slow", {"seconds": 30}, "stopped")]
)
def test_webhook_fires_on_failed_and_stopped_runs(
    api: Api, web_server: LocalWebServer, workflow: str, inputs: dict, status: str
) -> None:
    run = api.create_ok(workflow, inputs, callback_url=f"{web_server.url}/hook")
    if status == "stopped":
        api.session.post(api.url(f"/v1/runs/{run['id']}/stop"))

    wait_until(lambda: deliveries(api))

    assert [payload["status"] for payload in web_server.received] == [status]


def test_webhook_retries_until_success(api: Api, web_server: LocalWebServer) -> None:
    web_server.post_statuses = [500, 503]
    api.create_ok("echo", {"text": "a"}, callback_url=f"{web_server.url}/hook")

    [record] = wait_until(lambda: deliveries(api))

    assert (record["attempts"], record["ok"], record["status"]) == (3, True, 200)
    assert len(web_server.received) == 3


def test_webhook_gives_up_after_three_tries(api: Api, web_server: LocalWebServer) -> None:
    web_server.post_statuses = [500, 500, 500, 500]
    api.create_ok("echo", {"text": "a"}, callback_url=f"{web_server.url}/hook")

    [record] = wait_until(lambda: deliveries(api))

    assert (record["attempts"], record["ok"], record["status"]) == (3, False, 500)
    assert len(web_server.received) == 3


def test_webhook_to_nothing_listening_is_recorded_as_failed(api: Api) -> None:
    api.create_ok("echo", {"text": "a"}, callback_url="http://127.0.0.1:9/hook")

    [record] = wait_until(lambda: deliveries(api))

    assert (record["attempts"], record["ok"]) == (3, False)
    assert isinstance(record["status"], str)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5/hook", "http://169.254.169.254/hook", "http://[::1]:1/hook"]
)
def test_private_callback_urls_are_a_422(api: Api, url: str) -> None:
    response = api.create("echo", {"text": "a"}, callback_url=url)

    if url.startswith("http://[::1]"):
        assert response.status_code == 200  # loopback allowed by this emulator's switch
        return
    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", "callback_url"]
    assert "refused" in issue["msg"]


def test_loopback_callback_is_a_422_without_the_switch() -> None:
    with EmulatorServer() as strict:
        response = requests.post(
            f"{strict.url}/v1/workflows/{strict.control.workflow_id('echo')}/runs",
            json={"input": {"text": "a"}, "callback_url": "http://127.0.0.1:8080/hook"},
            headers={"X-API-Key": strict.api_key},
        )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "callback_url"]
