"""The official Noxus client (``noxus-sdk``) against the emulator: what users' own code does with it.

The emulator is written from the API reference (``noxus-api.md``); these tests check that the official
client accepts what it serves: its start-up reads (node catalogue, key record), workflows, runs created,
streamed, refreshed, waited on, listed, run synchronously and stopped, and files, sync and async.
The client is a test-only dependency (``scripts/venv.sh`` installs it); without it the module is skipped.
"""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

noxus_sdk = pytest.importorskip("noxus_sdk", reason="the official Noxus client (noxus-sdk) is not installed")

from noxus_sdk.client import Client  # noqa: E402
from noxus_sdk.resources.runs import Run, RunFailureError  # noqa: E402
from noxus_sdk.workflows import WorkflowDefinition  # noqa: E402

from airflow_provider_noxus.emulator import EmulatorServer  # noqa: E402

#: No test here may take longer (the client's own request timeout is 120 s).
TEST_DEADLINE_S = 30


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail a test that is still running after :data:`TEST_DEADLINE_S` (a hung stream, a wait that never
    ends) instead of hanging the suite: SIGALRM interrupts the blocked read in the main thread."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"test still running after {TEST_DEADLINE_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_DEADLINE_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def client(noxus_emulator: EmulatorServer) -> Iterator[Client]:
    """The official client as users build it: it reads ``/v1/nodes`` and ``/v1/admin/me`` on start."""
    client = Client(api_key=noxus_emulator.api_key, base_url=noxus_emulator.url)
    try:
        yield client
    finally:
        client.close()


def workflow(client: Client, emulator: EmulatorServer, name: str) -> WorkflowDefinition:
    return client.workflows.get(emulator.control.workflow_id(name))


def test_client_starts_on_the_emulators_catalogue_and_key(client: Client) -> None:
    assert {"InputNode", "ProcessNode", "OutputNode"} <= {node["type"] for node in client.nodes}
    me = client.admin.get_me()
    assert me.tenant_admin is False and me.value.startswith("****")


def test_workflows_read_and_listed(client: Client, noxus_emulator: EmulatorServer) -> None:
    summarize = workflow(client, noxus_emulator, "summarize")

    assert summarize.name == "summarize"
    assert [node.type for node in summarize.nodes] == [
        "InputNode",
        "ProcessNode",
        "ProcessNode",
        "OutputNode",
    ]
    assert [edge.from_id.node_id for edge in summarize.edges] == [node.id for node in summarize.nodes[:-1]]
    first, second = client.workflows.list(page=1, page_size=4), client.workflows.list(page=2, page_size=4)
    assert (len(first), len(second)) == (4, 2)
    assert {w.name for w in first + second} == {
        "echo", "summarize", "slow", "fail", "human_review", "file_info",
    }  # fmt: skip


def test_create_stream_refresh_and_resume(client: Client, noxus_emulator: EmulatorServer) -> None:
    run = workflow(client, noxus_emulator, "summarize").run({"document": "Airflow runs workflows."})
    assert run.status == "queued"

    events = list(run.stream())

    assert events[-1].is_terminal and events[-1].data["workflow_status"] == "completed"
    assert any(event.type == "content" and event.data.get("content") for event in events)
    ids = [event.redis_id for event in events]
    assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    resumed = list(run.stream(etag=ids[len(ids) // 2]))
    assert [event.redis_id for event in resumed] == ids[len(ids) // 2 + 1 :]
    refreshed = run.refresh()
    assert refreshed.status == "completed" and refreshed.progress == 100
    streamed = "".join(event.data.get("content", "") for event in events if event.type == "content")
    assert refreshed.output == {"summary": streamed}


def test_wait_returns_the_output_or_raises_on_failure(client: Client, noxus_emulator: EmulatorServer) -> None:
    echo = workflow(client, noxus_emulator, "echo")
    assert echo.run({"text": "hello"}).wait(interval=1, output_only=True) == {"text": "hello"}

    failing = workflow(client, noxus_emulator, "fail").run({"message": "boom"})
    with pytest.raises(RunFailureError):
        failing.wait(interval=1)
    assert failing.output == {"error": "boom"}


def test_runs_listed_newest_first_by_page(client: Client, noxus_emulator: EmulatorServer) -> None:
    echo = workflow(client, noxus_emulator, "echo")
    created = [echo.run({"text": str(i)}).id for i in range(3)]

    first = client.runs.list(echo.id, page=1, page_size=2)
    second = client.runs.list(echo.id, page=2, page_size=2)

    assert [r.id for r in first + second] == created[::-1]
    assert all(isinstance(r, Run) and r.output is None for r in first)


def test_sync_run(client: Client, noxus_emulator: EmulatorServer) -> None:
    echo_id = noxus_emulator.control.workflow_id("echo")

    assert client.runs.run_sync(echo_id, {"text": "now"}, output_only=True)["output"] == {"text": "now"}
    whole = client.runs.run_sync(echo_id, {"text": "all"})
    assert whole["status"] == "completed" and whole["output"] == {"text": "all"}


def test_stop_a_run_and_its_stream_ends(client: Client, noxus_emulator: EmulatorServer) -> None:
    run = workflow(client, noxus_emulator, "slow").run({"seconds": 60})

    stopped = client.runs.stop(run.id)

    assert stopped.id == run.id and stopped.status == "stopped"
    assert list(run.stream())[-1].data["workflow_status"] == "stopped"
    assert run.refresh().status == "stopped"


def test_upload_a_file_and_run_on_it(client: Client, noxus_emulator: EmulatorServer) -> None:
    uploaded = client.files.save(io.BytesIO(b"quarterly figures"))

    assert uploaded.uri == f"spot://{uploaded.id}" and uploaded.size == len(b"quarterly figures")
    assert client.files.get(str(uploaded.id)) == b"quarterly figures"
    info = workflow(client, noxus_emulator, "file_info").run({"document": {"uri": uploaded.uri}})
    output: dict[str, Any] = info.wait(interval=1, output_only=True)  # type: ignore[assignment]
    assert (output["size"], output["source"]) == (len(b"quarterly figures"), "spot")


def test_async_create_stream_wait_list_and_upload(client: Client, noxus_emulator: EmulatorServer) -> None:
    summarize = workflow(client, noxus_emulator, "summarize")

    async def scenario() -> None:
        try:
            run = await summarize.arun({"document": "Async too."})
            events = [event async for event in run.astream()]
            assert events[-1].data["workflow_status"] == "completed"
            done = await run.a_wait(interval=1)
            assert isinstance(done, Run) and done.status == "completed" and done.output["summary"]
            listed = await client.runs.alist(summarize.id, page=1, page_size=5)
            assert [r.id for r in listed] == [run.id]
            uploaded = await client.files.asave(io.BytesIO(b"async bytes"))
            assert await client.files.aget(str(uploaded.id)) == b"async bytes"
            assert (await client.runs.astop(run.id)).status == "completed"  # a final run stays as it is
        finally:
            await client.aclose()

    asyncio.run(scenario())
