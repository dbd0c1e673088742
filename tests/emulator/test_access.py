"""Authentication, workspace isolation, the account/catalogue/workflow reads and error shapes."""

from __future__ import annotations

import requests

from emulator.helpers import KEY_A, KEY_B, Api


def test_missing_or_wrong_key_is_a_401_with_detail(api: Api) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = requests.get(api.url("/v1/nodes"), headers=headers)
        assert response.status_code == 401
        assert "X-API-Key" in response.json()["detail"]
        assert response.headers["x-request-id"]
    assert api.emu.control.counters()["requests"]["nodes"] == {"401": 2}


def test_another_workspaces_run_is_a_404(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    other = {"X-API-Key": KEY_B}

    assert requests.get(api.url(f"/v1/runs/{run['id']}"), headers=other).status_code == 404
    assert requests.post(api.url(f"/v1/runs/{run['id']}/stop"), headers=other).status_code == 404
    assert requests.get(api.url(f"/v1/runs/{run['id']}/events"), headers=other).status_code == 404
    listed = requests.get(api.url(f"/v1/workflows/{run['workflow_id']}/runs"), headers=other).json()
    assert listed["total"] == 0


def test_each_key_has_its_own_workspace(api: Api) -> None:
    run_a = api.create_ok("echo", {"text": "a"})
    run_b = requests.post(
        api.url(f"/v1/workflows/{api.wid('echo')}/runs"),
        json={"input": {"text": "b"}},
        headers={"X-API-Key": KEY_B},
    ).json()

    assert run_a["group_id"] != run_b["group_id"]


def test_group_id_of_another_workspace_is_refused(api: Api) -> None:
    own = api.create_ok("echo", {"text": "a"})["group_id"]

    assert api.create("echo", {"text": "a"}, group_id=own).status_code == 200
    response = api.create("echo", {"text": "a"}, group_id="someone-else")
    assert response.status_code == 403
    assert "someone-else" in response.json()["detail"]


def test_admin_me_masks_the_key(api: Api) -> None:
    response = api.session.get(api.url("/v1/admin/me"))

    assert response.status_code == 200
    me = response.json()
    assert {"id", "name", "tenant_admin", "value", "permissions"} <= set(me)
    assert me["tenant_admin"] is False and me["permissions"] is None
    assert KEY_A not in response.text
    assert me["value"] == "****" + KEY_A[-4:]


#: What the official client's node model requires of each catalogue entry (noxus-sdk 0.6.0).
NODE_FIELDS = {
    "type", "title", "description", "integrations", "inputs", "outputs", "config", "is_available",
    "visible", "config_endpoint",
}  # fmt: skip


def test_nodes_is_a_list_of_node_types_in_the_official_clients_shape(api: Api) -> None:
    nodes = api.session.get(api.url("/v1/nodes")).json()

    assert isinstance(nodes, list) and nodes
    for node in nodes:
        assert set(node) >= NODE_FIELDS, node["type"]
        assert all(isinstance(c, dict) and c["name"] for c in node["inputs"] + node["outputs"])
        for name, field in node["config"].items():
            assert {"type", "description", "visible", "optional", "default"} <= set(field), name


def test_workflow_definitions_use_catalogue_types_and_connectors(api: Api) -> None:
    catalogue = {node["type"]: node for node in api.session.get(api.url("/v1/nodes")).json()}
    for workflow_name in ("echo", "summarize", "human_review"):
        definition = api.session.get(api.url(f"/v1/workflows/{api.wid(workflow_name)}")).json()["definition"]
        types = {node["id"]: node["type"] for node in definition["nodes"]}

        assert set(types.values()) <= set(catalogue)
        for edge in definition["edges"]:
            source, target = edge["from_id"], edge["to_id"]
            outputs = [c["name"] for c in catalogue[types[source["node_id"]]]["outputs"]]
            inputs = [c["name"] for c in catalogue[types[target["node_id"]]]["inputs"]]
            assert source["connector_name"] in outputs and target["connector_name"] in inputs


def test_workflows_are_listed_with_their_inputs(api: Api) -> None:
    page = api.session.get(api.url("/v1/workflows")).json()

    assert page["total"] == 6 and page["page"] == 1 and page["pages"] == 1
    by_name = {item["name"]: item for item in page["items"]}
    assert set(by_name) == {"echo", "summarize", "slow", "fail", "human_review", "file_info"}
    assert [i["label"] for i in by_name["human_review"]["inputs"]] == ["text", "feedback_delay"]
    assert by_name["file_info"]["inputs"][0]["type"] == "file"
    assert by_name["echo"]["id"] == api.wid("echo")


def test_workflows_list_pages(api: Api) -> None:
    page = api.session.get(api.url("/v1/workflows"), params={"page": 3, "size": 2}).json()

    assert (len(page["items"]), page["pages"], page["size"]) == (2, 3, 2)
    assert api.session.get(api.url("/v1/workflows"), params={"size": 0}).status_code == 422


def test_page_size_is_honoured_beside_size(api: Api) -> None:
    def page(**params: int) -> dict:
        response = api.session.get(api.url("/v1/workflows"), params=params)
        assert response.status_code == 200, response.text
        return response.json()

    alone = page(page_size=4)  # the official client's name
    both = page(page=2, page_size=4, size=4)  # what it actually sends
    assert (len(alone["items"]), alone["size"], alone["pages"]) == (4, 4, 2)
    assert (len(both["items"]), both["page"], both["size"]) == (2, 2, 4)
    assert page()["size"] == 50


def test_disagreeing_or_bad_page_sizes_are_422s_naming_the_parameter(api: Api) -> None:
    for params, named in (({"size": 2, "page_size": 3}, "page_size"), ({"page_size": 101}, "page_size")):
        response = api.session.get(api.url("/v1/workflows"), params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", named]


def test_get_workflow_has_its_definition(api: Api) -> None:
    workflow = api.session.get(api.url(f"/v1/workflows/{api.wid('summarize')}")).json()

    assert workflow["name"] == "summarize"
    kinds = [node["kind"] for node in workflow["definition"]["nodes"]]
    assert kinds == ["input", "step", "llm", "output"]
    assert len(workflow["definition"]["edges"]) == 3


def test_unknown_workflow_and_route_are_json_404s(api: Api) -> None:
    assert api.session.get(api.url("/v1/workflows/nope")).status_code == 404
    response = api.session.get(api.url("/v1/nothing-here"))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert response.headers["x-request-id"]


def test_wrong_method_is_a_json_405(api: Api) -> None:
    response = api.session.delete(api.url("/v1/nodes"))

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert "GET" in response.headers["Allow"]
