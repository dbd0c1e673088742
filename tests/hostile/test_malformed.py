"""Malformed ids, frames and inputs become clear errors (or are ignored), never a request to another
endpoint, a crash of the trigger or a hot loop."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pytest
from support.hostile_calls import first_stream_events, run_body, trigger_event
from support.hostile_server import Conn, Request

from airflow_provider_noxus.exceptions import NoxusConfigurationError, NoxusProtocolError
from airflow_provider_noxus.protocol import MAX_SSE_EVENT_CHARS
from airflow_provider_noxus.wait import WaitOptions


def answering(request: Request, conn: Conn) -> None:
    conn.reply(200, run_body())


# ---- ids that would change the path -------------------------------------------------------------

BAD_IDS = [".", "..", "", "  "]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    ("method", "place"),
    [("get_run_status", 0), ("stop_run", 0), ("get_run", 0), ("get_run", 1), ("create_run", 0)],
)
def test_dot_and_empty_ids_are_refused_before_sending(
    serve: Any, connect: Any, api_for: Any, bad: str, method: str, place: int
) -> None:
    server = serve(answering)
    args: list[Any] = {"get_run": ["wf-1", "run-1"], "create_run": ["wf-1", {}]}.get(method, ["run-1"])
    args[place] = bad
    with pytest.raises(NoxusConfigurationError, match="not a Noxus id"):
        api_for(connect(server.url))(method, *args)
    assert server.requests == []


def test_the_trigger_refuses_a_dot_run_id(serve: Any, connect: Any) -> None:
    server = serve(answering)
    event = trigger_event(connect(server.url), run_id="..", wait_strategy="poll")
    assert event["status"] == "error" and "not a Noxus id" in event["message"]
    assert server.requests == []


# ---- event streams ------------------------------------------------------------------------------

FINAL = {"type": "state", "data": {"workflow_status": "completed"}, "redisId": "3-0"}


def frame(payload: dict[str, Any], end: bytes = b"\n") -> bytes:
    return b"data: " + json.dumps(payload).encode() + end + end


def test_event_ids_that_are_not_strings_or_numbers_are_ignored_by_the_trigger(
    serve: Any, connect: Any
) -> None:
    odd_ids: list[Any] = [{"x": 1}, True, [1], None]

    def handler(request: Request, conn: Conn) -> None:
        if not request.path.endswith("/events"):
            conn.reply(200, run_body("running"))
            return
        conn.head(200, {"Content-Type": "text/event-stream"})
        streams = sum(r.path.endswith("/events") for r in server.requests)
        if streams <= len(odd_ids):
            odd = {"type": "state", "data": {"status": "running"}, "redisId": odd_ids[streams - 1]}
            conn.send(frame({"type": "state", "data": {"status": "running"}, "redisId": f"{streams}-0"}))
            conn.send(frame(odd))
        else:
            conn.send(frame(FINAL))
        conn.close()

    server = serve(handler)
    event = trigger_event(connect(server.url), wait_strategy="stream")
    assert event["status"] == "success"
    etags = [r.query.get("etag") for r in server.requests if r.path.endswith("/events")]
    # Each reconnection resumes after the last good id; odd ids were never sent back.
    assert etags == [None, ["1-0"], ["2-0"], ["3-0"], ["4-0"]]


def test_event_ids_are_text_or_none_on_both_transports(serve: Any, connect: Any, call_mode: str) -> None:
    def handler(request: Request, conn: Conn) -> None:
        conn.head(200, {"Content-Type": "text/event-stream"})
        for odd in [{"x": 1}, False, 17]:
            conn.send(frame({"type": "state", "data": {"status": "running"}, "redisId": odd}))
        conn.send(frame(FINAL))
        conn.close()

    server = serve(handler)
    events = first_stream_events(connect(server.url), call_mode, 4)
    assert [event.event_id for event in events] == [None, None, "17", "3-0"]


def test_an_endless_event_line_is_a_clear_error_not_unbounded_memory(
    serve: Any, connect: Any, call_mode: str
) -> None:
    def handler(request: Request, conn: Conn) -> None:
        conn.head(200, {"Content-Type": "text/event-stream"})
        conn.send(b"data: ")
        block = b"x" * (1024 * 1024)
        for _ in range(MAX_SSE_EVENT_CHARS // len(block) + 2):
            conn.send(block)
        conn.pause(10)  # held open: only the client's bound ends this

    server = serve(handler)
    with pytest.raises(NoxusProtocolError, match="characters in one line"):
        first_stream_events(connect(server.url), call_mode, 1, limit=20)


def test_the_trigger_polls_after_streams_of_endless_lines(serve: Any, connect: Any) -> None:
    def handler(request: Request, conn: Conn) -> None:
        if not request.path.endswith("/events"):
            conn.reply(200, run_body())
            return
        conn.head(200, {"Content-Type": "text/event-stream"})
        conn.send(b"data: " + b"x" * (MAX_SSE_EVENT_CHARS + 10))
        conn.pause(10)

    server = serve(handler)
    assert trigger_event(connect(server.url), wait_strategy="stream", limit=60)["status"] == "success"
    assert any(not r.path.endswith("/events") for r in server.requests)


def test_an_event_ending_in_a_bare_cr_is_not_held_back(serve: Any, connect: Any, call_mode: str) -> None:
    def handler(request: Request, conn: Conn) -> None:
        conn.head(200, {"Content-Type": "text/event-stream"})
        conn.send(frame(FINAL, end=b"\r"))
        conn.pause(10)  # nothing more comes for a long time

    server = serve(handler)
    events = first_stream_events(connect(server.url), call_mode, 1)
    assert [event.workflow_status for event in events] == ["completed"]


def test_a_leading_byte_order_mark_does_not_lose_the_first_event(
    serve: Any, connect: Any, call_mode: str
) -> None:
    def handler(request: Request, conn: Conn) -> None:
        conn.head(200, {"Content-Type": "text/event-stream; charset=utf-8"})
        conn.send("\ufeff".encode() + frame(FINAL))
        conn.close()

    server = serve(handler)
    events = first_stream_events(connect(server.url), call_mode, 1)
    assert [event.event_id for event in events] == ["3-0"]


# ---- inputs and node ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"doc": {"pages": [1, 2, float("nan")]}}, r"inputs\.doc\.pages\[2\] is nan"),
        ({"limit": float("inf")}, r"inputs\.limit is inf"),
        ({"when": datetime.date(2025, 1, 1)}, r"inputs\.when is a date"),
        ({"tags": {"a", "b"}}, r"inputs\.tags is a set"),
        ({"my input": [{"x": -float("inf")}]}, r"inputs\['my input'\]\[0\]\.x is -inf"),
    ],
)
def test_inputs_json_cannot_carry_are_refused_naming_them(
    serve: Any, connect: Any, api_for: Any, inputs: dict[str, Any], named: str
) -> None:
    server = serve(answering)
    with pytest.raises(NoxusConfigurationError, match=named):
        api_for(connect(server.url))("create_run", "wf-1", inputs)
    assert server.requests == []


@pytest.mark.parametrize("node_ids", ["abc", b"abc", 7, ["ok", ""], ["ok", None]])
def test_node_ids_that_are_not_a_list_of_ids_are_refused(
    serve: Any, connect: Any, api_for: Any, node_ids: Any
) -> None:
    server = serve(answering)
    with pytest.raises(NoxusConfigurationError, match="node_ids"):
        api_for(connect(server.url))("create_run", "wf-1", {}, node_ids=node_ids)
    assert server.requests == []


def test_the_page_size_is_sent_under_both_names(serve: Any, connect: Any, api_for: Any) -> None:
    server = serve(lambda request, conn: conn.reply(200, {"items": [], "total": 0, "page": 2, "size": 10}))
    api_for(connect(server.url))("list_runs", "wf-1", page=2, size=10)
    assert server.requests[0].query == {"page": ["2"], "size": ["10"], "page_size": ["10"]}


# ---- answers missing what the provider needs -----------------------------------------------------


def test_a_create_answered_without_an_id_is_looked_up_not_sent_again(
    serve: Any, connect: Any
) -> None:
    from support.noxus_tasks import FakeTaskInstance, make_context

    from airflow_provider_noxus.exceptions import NoxusRunError
    from airflow_provider_noxus.operators.noxus import NoxusRunOperator

    def handler(request: Request, conn: Conn) -> None:
        if request.method == "POST":
            conn.reply(200, {"status": "queued"})  # a run was made, but which?
        else:
            conn.reply(200, {"items": [], "total": 0, "page": 1, "size": 100, "pages": 0})

    server = serve(handler)
    hook = connect(server.url)
    task = NoxusRunOperator(
        task_id="t", workflow_id="wf-1", inputs={"q": 1}, noxus_conn_id=hook.noxus_conn_id
    )
    with pytest.raises(NoxusRunError, match="no run made by it was found") as raised:
        task.execute(make_context(FakeTaskInstance()))
    assert "without a run id" in str(raised.value.__cause__)
    assert [request.method for request in server.requests].count("POST") == 1
    lookups = [request.path for request in server.requests if request.method == "GET"]
    assert lookups == ["/v1/workflows/wf-1/runs"] * 2, "at once, then when the create's window settled"


@pytest.mark.parametrize("answer", [{"id": "run-1"}, {"id": "run-1", "status": None}])
def test_a_status_read_without_a_status_is_waited_through_with_one_warning(
    serve: Any, connect: Any, answer: dict[str, Any], caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    answers = iter([answer, answer, answer])

    def handler(request: Request, conn: Conn) -> None:
        conn.reply(200, next(answers, run_body("completed")))

    server = serve(handler)
    hook = connect(server.url)
    with caplog.at_level("WARNING"):
        options = WaitOptions(strategy="poll", poll_interval=0.05)
        outcome = hook.wait("wf-1", "run-1", options, deadline=time.time() + 20)
    assert outcome.status == "success"
    # Airflow 2 writes each record to logging and to stdout: count in each place, not in both.
    stdout = capsys.readouterr().out
    assert max(caplog.text.count("without a status"), stdout.count("without a status")) == 1
