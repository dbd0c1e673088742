"""Answers are bounded per request (``ApiRequest.max_bytes``): a run list page past its cap is dropped
unread on both transports, and the triggerer's shared status watcher then reads its runs one by one
instead of parsing oversized pages in its event loop every round."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.hostile_calls import run_body
from support.hostile_server import Conn, Request
from support.noxus_tasks import first_event

from airflow_provider_noxus import protocol
from airflow_provider_noxus.exceptions import NoxusAnswerTooLargeError
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

LIMIT_S = 30.0


def run_page(total_bytes: int, status: str = "running") -> bytes:
    """A run list page of runs run-1..run-3 and older runs whose inputs make it ``total_bytes`` long."""
    runs = [run_body(status, f"run-{n}") for n in range(1, 4)]
    filler = total_bytes // 100
    runs += [{**run_body("completed", f"old-{n}"), "input": {"text": "x" * filler}} for n in range(100)]
    page = {"items": runs[:100], "total": len(runs), "page": 1, "size": 100, "pages": 2}
    return json.dumps(page).encode()


def serving_lists_of(size: int) -> Any:
    def handler(request: Request, conn: Conn) -> None:
        if request.path == "/v1/workflows/wf-1/runs":
            conn.reply(200, run_page(size), headers={"Content-Type": "application/json"})
        else:
            conn.reply(200, run_body("completed", request.path.rsplit("/", 1)[-1]))

    return handler


def test_a_run_list_past_its_cap_is_refused_unread(serve: Any, connect: Any, api_for: Any) -> None:
    api_server = serve(serving_lists_of(3 * protocol.MAX_LIST_ANSWER_BYTES))
    with pytest.raises(NoxusAnswerTooLargeError, match=str(protocol.MAX_LIST_ANSWER_BYTES)):
        api_for(connect(api_server.url))("list_runs", "wf-1")
    assert len(api_server.requests) == 1, "not retried: the same request gets the same answer"


def test_a_run_list_within_its_cap_is_read(serve: Any, connect: Any, api_for: Any) -> None:
    api_server = serve(serving_lists_of(protocol.MAX_LIST_ANSWER_BYTES // 2))
    assert len(api_for(connect(api_server.url))("list_runs", "wf-1")["items"]) == 100


async def test_the_status_watcher_reads_runs_one_by_one_past_the_cap(serve: Any, connect: Any) -> None:
    api_server = serve(serving_lists_of(3 * protocol.MAX_LIST_ANSWER_BYTES))
    hook = connect(api_server.url)
    triggers = [
        NoxusRunTrigger(hook.noxus_conn_id, "wf-1", f"run-{n}", poll_interval=0.1, wait_strategy="poll")
        for n in (1, 2)
    ]
    events = await asyncio.wait_for(asyncio.gather(*(first_event(t) for t in triggers)), LIMIT_S)
    assert [event["status"] for event in events] == ["success", "success"], events
    paths = [request.path for request in api_server.requests]
    assert paths.count("/v1/workflows/wf-1/runs") == 1, "an oversized list is not read again"
    assert {"/v1/runs/run-1", "/v1/runs/run-2"} <= set(paths)
