"""Runs over HTTP: creation, the run object, statuses, listing, stop, the sync endpoint, validation."""

from __future__ import annotations

import uuid

import pytest
from support.waiting import wait_until

from emulator.helpers import Api

PROGRESS_KEYS = {
    "executed_nodes",
    "running_nodes",
    "remaining_nodes",
    "skipped_nodes",
    "error_handler_nodes",
    "per_node_progress",
    "per_edge_progress",
    "subflow_executions",
    "run_logs",
}
RUN_KEYS = {
    "id",
    "group_id",
    "workflow_id",
    "workflow_version_id",
    "status",
    "created_at",
    "finished_at",
    "input",
    "node_ids",
    "single_node_id",
    "progress",
    "progress_details",
}


def assert_run_shape(run: dict, with_output: bool) -> None:
    assert set(run) == RUN_KEYS | ({"output"} if with_output else set())
    assert set(run["progress_details"]) == PROGRESS_KEYS
    assert isinstance(run["input"], dict)
    assert isinstance(run["progress"], int) and 0 <= run["progress"] <= 100


def test_async_create_returns_a_queued_run_without_output(api: Api) -> None:
    run = api.create_ok("echo", {"text": "hello"})

    assert_run_shape(run, with_output=False)
    assert run["status"] == "queued"
    assert run["finished_at"] is None
    assert run["workflow_id"] == api.wid("echo")
    assert run["input"] == {"text": "hello"}
    assert run["created_at"].endswith("Z")


def test_echo_completes_with_its_output_only_on_the_workflow_scoped_get(api: Api) -> None:
    run = api.create_ok("echo", {"text": "hello"})

    final = api.wait_final(run)
    status_only = api.session.get(api.url(f"/v1/runs/{run['id']}")).json()

    assert_run_shape(final, with_output=True)
    assert final["status"] == "completed"
    assert final["output"] == {"text": "hello"}
    assert final["progress"] == 100
    assert final["finished_at"] is not None
    executed = final["progress_details"]["executed_nodes"]
    assert final["progress_details"]["per_node_progress"] == dict.fromkeys(executed, 100)
    assert_run_shape(status_only, with_output=False)
    assert status_only["status"] == "completed"


def test_slow_run_is_running_with_progress_below_100(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})

    running = wait_until(lambda: (r := api.run(run))["progress_details"]["running_nodes"] and r)

    assert running["status"] == "running"
    assert 0 <= running["progress"] < 100
    assert running["progress_details"]["running_nodes"] == list(
        running["progress_details"]["per_node_progress"]
    )
    api.session.post(api.url(f"/v1/runs/{run['id']}/stop"))


def test_fail_workflow_fails_with_its_message_in_output(api: Api) -> None:
    run = api.create_ok("fail", {"message": "the model is down"})

    final = api.wait_final(run)

    assert final["status"] == "failed"
    assert final["output"] == {"error": "the model is down"}
    assert final["finished_at"] is not None


def test_fail_workflow_default_message(api: Api) -> None:
    assert api.wait_final(api.create_ok("fail", {}))["output"] == {"error": "Simulated failure"}


def test_human_review_pauses_in_awaiting_human_feedback_then_completes(api: Api) -> None:
    run = api.create_ok("human_review", {"text": "draft", "feedback_delay": 0.5})

    wait_until(lambda: api.run(run)["status"] == "awaiting_human_feedback")
    final = api.wait_final(run)

    assert final["status"] == "completed"
    assert final["output"] == {"text": "draft", "approved": True}


def test_human_review_uses_the_server_feedback_delay_by_default(api: Api) -> None:
    run = api.create_ok("human_review", {"text": "draft"})

    wait_until(lambda: api.run(run)["status"] == "awaiting_human_feedback")

    assert api.wait_final(run)["status"] == "completed"


def test_summarize_outputs_the_streamed_summary(api: Api) -> None:
    final = api.wait_final(api.create_ok("summarize", {"document": "A long text."}))

    assert final["status"] == "completed"
    assert final["output"]["summary"].startswith("The document introduces its subject")


@pytest.mark.parametrize("key_form", ["label", "node_id", "node_id::input"])
def test_inputs_by_label_node_id_or_node_input(api: Api, key_form: str) -> None:
    workflow = api.session.get(api.url(f"/v1/workflows/{api.wid('echo')}")).json()
    node_id = workflow["inputs"][0]["node_id"]
    key = {"label": "text", "node_id": node_id, "node_id::input": f"{node_id}::input"}[key_form]

    final = api.wait_final(api.create_ok("echo", {key: "hi"}))

    assert final["output"] == {"text": "hi"}
    assert final["input"] == {key: "hi"}


def test_unknown_input_is_a_422_naming_it(api: Api) -> None:
    response = api.create("echo", {"text": "hi", "colour": "blue"})

    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", "input", "colour"]
    assert "'colour'" in issue["msg"] and "'echo'" in issue["msg"]
    assert response.headers["x-request-id"]


def test_missing_required_input_is_a_422_naming_it(api: Api) -> None:
    response = api.create("echo", {})

    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", "input", "text"]
    assert issue["type"] == "missing"
    assert "'text'" in issue["msg"]


def test_input_of_the_wrong_type_is_a_422(api: Api) -> None:
    response = api.create("slow", {"seconds": "ten"})

    assert response.status_code == 422
    assert "expected a number" in response.json()["detail"][0]["msg"]


def test_same_input_given_twice_is_a_422(api: Api) -> None:
    node_id = api.session.get(api.url(f"/v1/workflows/{api.wid('echo')}")).json()["inputs"][0]["node_id"]

    response = api.create("echo", {"text": "a", node_id: "b"})

    assert response.status_code == 422
    assert "twice" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ([1, 2], ["body"], "model_attributes_type"),
        ({}, ["body", "input"], "missing"),
        ({"input": "text"}, ["body", "input"], "dict_type"),
        (
            {"input": {"text": "a"}, "callback_url": "ftp://example.com/hook"},
            ["body", "callback_url"],
            "url_scheme",
        ),
        (
            {"input": {"text": "a"}, "workflow_version_id": "v2"},
            ["body", "workflow_version_id"],
            "uuid_parsing",
        ),
        ({"input": {"text": "a"}, "node_ids": "n1"}, ["body", "node_ids"], "list_type"),
        ({"input": {"text": "a"}, "tracing": "yes"}, ["body", "tracing"], "bool_type"),
        ({"input": {"text": "a"}, "group_id": 5}, ["body", "group_id"], "string_type"),
    ],
)
def test_bad_create_bodies_get_fastapi_422_lists(api: Api, body: object, loc: list, error_type: str) -> None:
    response = api.session.post(api.url(f"/v1/workflows/{api.wid('echo')}/runs"), json=body)

    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert (issue["loc"], issue["type"]) == (loc, error_type)


def test_body_that_is_not_json_is_a_422(api: Api) -> None:
    response = api.session.post(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs"),
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_unknown_workflow_is_a_404(api: Api) -> None:
    response = api.session.post(api.url(f"/v1/workflows/{uuid.uuid4()}/runs"), json={"input": {}})

    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


def test_optional_fields_are_echoed_in_the_run(api: Api) -> None:
    version = str(uuid.uuid4())
    run = api.create_ok("echo", {"text": "a"}, workflow_version_id=version, tracing=True)

    assert run["workflow_version_id"] == version


def test_single_node_id_runs_one_node_and_skips_the_others(api: Api) -> None:
    workflow = api.session.get(api.url(f"/v1/workflows/{api.wid('human_review')}")).json()
    process_nodes = [n["id"] for n in workflow["definition"]["nodes"] if n["type"] == "ProcessNode"]

    final = api.wait_final(api.create_ok("human_review", {"text": "a"}, single_node_id=process_nodes[0]))

    assert final["single_node_id"] == process_nodes[0]
    assert final["progress_details"]["executed_nodes"] == [process_nodes[0]]
    assert final["progress_details"]["skipped_nodes"] == process_nodes[1:]


def test_node_ids_run_up_to_the_last_one_named(api: Api) -> None:
    workflow = api.session.get(api.url(f"/v1/workflows/{api.wid('fail')}")).json()
    first = next(n["id"] for n in workflow["definition"]["nodes"] if n["type"] == "ProcessNode")

    final = api.wait_final(api.create_ok("fail", {}, node_ids=[first]))

    assert final["status"] == "completed"
    assert final["node_ids"] == [first]


def test_unknown_node_ids_are_a_422(api: Api) -> None:
    assert api.create("echo", {"text": "a"}, node_ids=["nope"]).status_code == 422
    assert api.create("echo", {"text": "a"}, single_node_id="nope").status_code == 422


def test_list_runs_newest_first_in_the_page_envelope(api: Api) -> None:
    ids = [api.create_ok("echo", {"text": str(i)})["id"] for i in range(3)]
    api.create_ok("fail", {})

    page = api.session.get(api.url(f"/v1/workflows/{api.wid('echo')}/runs"), params={"size": 2}).json()
    page2 = api.session.get(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs"), params={"size": 2, "page": 2}
    ).json()

    past_the_end = api.session.get(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs"), params={"size": 2, "page": 3}
    ).json()

    assert (page["total"], page["page"], page["size"], page["pages"]) == (3, 1, 2, 2)
    assert [r["id"] for r in page["items"] + page2["items"]] == ids[::-1]
    assert "output" not in page["items"][0]
    assert (past_the_end["items"], past_the_end["total"], past_the_end["pages"]) == ([], 3, 2)


@pytest.mark.parametrize(
    ("params", "error_type"),
    [({"page": 0}, "greater_than_equal"), ({"size": 101}, "less_than_equal"), ({"size": "x"}, "int_parsing")],
)
def test_page_params_out_of_range_are_a_422(api: Api, params: dict, error_type: str) -> None:
    response = api.session.get(api.url(f"/v1/workflows/{api.wid('echo')}/runs"), params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == error_type


def test_stop_a_running_run(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})

    response = api.session.post(api.url(f"/v1/runs/{run['id']}/stop"))

    assert response.status_code == 200
    assert response.json()["status"] == "stopped"
    assert response.json()["finished_at"] is not None
    assert api.run(run)["status"] == "stopped"
    counters = api.emu.control.counters()
    assert counters["stops"] == {run["id"]: 1}
    assert counters["stops_total"] == 1


def test_stopping_a_final_run_leaves_it_as_it_is(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.wait_final(run)

    response = api.session.post(api.url(f"/v1/runs/{run['id']}/stop"))

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert api.emu.control.counters()["stops_total"] == 1


def test_unknown_run_is_a_404_everywhere(api: Api) -> None:
    run_id = str(uuid.uuid4())
    for method, path in [
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/events"),
        ("POST", f"/v1/runs/{run_id}/stop"),
        ("GET", f"/v1/workflows/{api.wid('echo')}/runs/{run_id}"),
    ]:
        response = api.session.request(method, api.url(path))
        assert response.status_code == 404, path
        assert response.json()["detail"] == f"Run {run_id} not found"


def test_run_under_another_workflow_is_a_404(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})

    response = api.session.get(api.url(f"/v1/workflows/{api.wid('fail')}/runs/{run['id']}"))

    assert response.status_code == 404


def test_sync_create_returns_the_final_run_with_output(api: Api) -> None:
    response = api.session.post(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs/sync"), json={"input": {"text": "x"}}
    )

    assert response.status_code == 200
    assert_run_shape(response.json(), with_output=True)
    assert response.json()["output"] == {"text": "x"}


def test_sync_create_output_only_and_use_output_ids(api: Api) -> None:
    workflow = api.session.get(api.url(f"/v1/workflows/{api.wid('echo')}")).json()
    output_node = next(n["id"] for n in workflow["definition"]["nodes"] if n["type"] == "OutputNode")

    response = api.session.post(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs/sync"),
        params={"output_only": "true", "use_output_ids": "true"},
        json={"input": {"text": "x"}},
    )

    assert response.status_code == 200
    assert set(response.json()) == {"id", "output"}
    assert response.json()["output"] == {output_node: "x"}


def test_sync_create_bad_flag_is_a_422(api: Api) -> None:
    response = api.session.post(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs/sync"),
        params={"output_only": "maybe"},
        json={"input": {}},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "output_only"]


def test_sync_create_past_the_hold_is_a_504_with_the_run_id_and_the_run_goes_on(api: Api) -> None:
    response = api.session.post(
        api.url(f"/v1/workflows/{api.wid('slow')}/runs/sync"), json={"input": {"seconds": 1.5}}
    )

    assert response.status_code == 504
    run_id = response.json()["run_id"]
    assert "did not finish" in response.json()["detail"]
    final = api.wait_final({"id": run_id, "workflow_id": api.wid("slow")})
    assert final["status"] == "completed"
    assert final["output"] == {"slept": 1.5}


def test_failed_sync_run_answers_200_with_the_failed_run(api: Api) -> None:
    response = api.session.post(api.url(f"/v1/workflows/{api.wid('fail')}/runs/sync"), json={"input": {}})

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["output"] == {"error": "Simulated failure"}


def test_runs_created_are_counted_per_workflow(api: Api) -> None:
    api.create_ok("echo", {"text": "a"})
    api.create_ok("echo", {"text": "b"})
    api.create("echo", {})

    counters = api.emu.control.counters()

    assert counters["runs_created"] == {api.wid("echo"): 2}
    assert counters["runs_created_total"] == 2
    assert counters["requests"]["create_run"] == {"200": 2, "422": 1}


def test_control_run_read_shows_any_run_with_output(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.wait_final(run)

    assert api.emu.control.run(run["id"])["output"] == {"text": "a"}
