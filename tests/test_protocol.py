"""The protocol layer on its own, without sockets: request building, error mapping, the retry
table, ``Retry-After`` forms, backoff bounds, redirects, inputs and the SSE parser."""

from __future__ import annotations

import email.utils
import json
import random
from typing import Any

import pytest

from airflow_provider_noxus import protocol
from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusBadRequestError,
    NoxusConfigurationError,
    NoxusConflictError,
    NoxusNotFoundError,
    NoxusPayloadTooLargeError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusRedirectError,
    NoxusServerError,
    NoxusSyncEndpointTimeout,
    NoxusTimeoutError,
    NoxusTLSError,
    NoxusTransportError,
    NoxusValidationError,
)
from airflow_provider_noxus.protocol import RetryPolicy, SSEParser

# ---- requests -----------------------------------------------------------------------------------


def test_paths_quote_ids_as_one_segment() -> None:
    request = protocol.get_run_request("wf 1", "run/2?x")
    assert request.path == "/v1/workflows/wf%201/runs/run%2F2%3Fx"
    assert (request.run_id, request.workflow_id) == ("run/2?x", "wf 1")
    assert protocol.stop_run_request("r").endpoint == "POST /v1/runs/r/stop"


@pytest.mark.parametrize("bad", [".", "..", "", " ", None])
def test_ids_that_would_change_the_path_are_refused(bad: Any) -> None:
    for build in (
        lambda: protocol.get_run_status_request(bad),
        lambda: protocol.stop_run_request(bad),
        lambda: protocol.get_run_request(bad, "r"),
        lambda: protocol.run_url("https://app", "wf", bad),
    ):
        with pytest.raises(NoxusConfigurationError, match="not a Noxus id"):
            build()


def test_dots_inside_an_id_are_fine() -> None:
    assert protocol.get_run_status_request("...").path == "/v1/runs/..."
    assert protocol.get_run_status_request("a..b").path == "/v1/runs/a..b"


def test_pages_send_the_size_under_both_names() -> None:
    request = protocol.list_runs_request("wf", page=3, size=20)
    assert request.params == {"page": 3, "size": 20, "page_size": 20}
    for page, size in [(0, 10), (1, 0), (1, 101), (True, 10), (1, 2.0)]:
        with pytest.raises(NoxusConfigurationError, match="page must be"):
            protocol.list_workflows_request(page=page, size=size)  # type: ignore[arg-type]


def test_create_body() -> None:
    body = protocol.create_run_body(
        {"q": [1, 2.5, None, True, {"k": "v"}]},
        workflow_version_id="v1",
        node_ids=["n1"],
        callback_url="https://hook",
    )
    assert body == {
        "input": {"q": [1, 2.5, None, True, {"k": "v"}]},
        "workflow_version_id": "v1",
        "node_ids": ["n1"],
        "callback_url": "https://hook",
    }
    assert protocol.create_run_body({}, node_ids=[]) == {"input": {}}
    json.dumps(body, allow_nan=False)


@pytest.mark.parametrize(
    ("inputs", "where"),
    [
        ({"a": float("nan")}, "inputs.a"),
        ({"a": {"b": [0, {"c": float("inf")}]}}, "inputs.a.b[1].c"),
        ({"a b": object()}, "inputs['a b']"),
        ({1: b"bytes"}, "inputs[1]"),
        ({"k": {(1, 2): "tuple key"}}, "inputs.k"),
    ],
)
def test_inputs_json_cannot_carry_are_named(inputs: dict[Any, Any], where: str) -> None:
    with pytest.raises(NoxusConfigurationError) as caught:
        protocol.check_json_inputs(inputs)
    assert f"Run input {where} " in str(caught.value)


def test_opaque_input_types_are_let_through() -> None:
    class Later:
        pass

    protocol.check_json_inputs({"doc": [Later()]}, opaque=(Later,))
    with pytest.raises(NoxusConfigurationError, match=r"inputs\.doc\[0\] is a Later"):
        protocol.check_json_inputs({"doc": [Later()]})


def test_a_read_can_carry_its_own_deadline() -> None:
    assert protocol.get_run_status_request("r", timeout=2.5).timeout == 2.5
    assert protocol.get_run_request("wf", "r").timeout is None


def test_node_ids_must_be_a_list_of_ids() -> None:
    assert protocol.create_run_body({}, node_ids=("a", "b"))["node_ids"] == ["a", "b"]
    for bad in ("abc", {"a": 1}.keys(), 3, ["a", 1], [" "]):
        with pytest.raises(NoxusConfigurationError, match="node_ids"):
            protocol.create_run_body({}, node_ids=bad)  # type: ignore[arg-type]


def test_urls_lose_their_userinfo() -> None:
    assert protocol.without_userinfo("https://u:p@h:8/x?q") == "https://h:8/x?q"
    assert protocol.without_userinfo("https://h/x") == "https://h/x"
    assert protocol.run_url("https://u:p@app/", "wf", "r") == "https://app/workflows/wf/runs/r"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Example.com/x", "https://example.com:443"),
        ("http://example.com:80/", "http://example.com:80"),
        ("http://u:p@[::1]:8080/x?y", "http://[::1]:8080"),
        ("http://example.com.:99999/", "http://example.com:invalid-port"),
    ],
)
def test_origin(url: str, origin: str) -> None:
    assert protocol.origin(url) == origin


# ---- redirects ----------------------------------------------------------------------------------

BASE = "https://api.example.com/api"
GET = protocol.get_run_status_request("r")
POST = protocol.create_run_request("wf", {"input": {}})


@pytest.mark.parametrize(
    ("request_", "status", "location", "target"),
    [
        (GET, 302, "/v1/runs/r2", "https://api.example.com/v1/runs/r2"),
        (GET, 301, "https://api.example.com:443/x", "https://api.example.com:443/x"),
        (POST, 307, "other", "https://api.example.com/api/v1/workflows/wf/other"),
        (POST, 308, "https://API.example.com/y", "https://API.example.com/y"),
    ],
)
def test_same_origin_redirects_are_followed(
    request_: protocol.ApiRequest, status: int, location: str, target: str
) -> None:
    current = protocol.build_url(BASE, request_)
    assert protocol.redirect_target(request_, BASE, current, status, location, hops=0) == target


@pytest.mark.parametrize(
    ("request_", "status", "location", "hops", "says"),
    [
        (GET, 302, "http://api.example.com/v1/runs/r", 0, "another origin, http://api.example.com:80"),
        (GET, 302, "https://api.example.com:8443/", 0, "another origin, https://api.example.com:8443"),
        (GET, 307, "https://evil.example/?k=1", 0, "another origin, https://evil.example:443"),
        (GET, 307, "//evil.example/x", 0, "another origin, https://evil.example:443"),
        (GET, 307, "https://a:b@evil.example/", 0, "another origin, https://evil.example:443"),
        (GET, 302, None, 0, "without a Location"),
        (POST, 302, "/v1/x", 0, "drop its body"),
        (POST, 303, "/v1/x", 0, "drop its body"),
        (GET, 302, "/v1/x", protocol.MAX_REDIRECTS, "more than 5 times"),
    ],
)
def test_other_redirects_are_refused(
    request_: protocol.ApiRequest, status: int, location: str | None, hops: int, says: str
) -> None:
    current = protocol.build_url(BASE, request_)
    with pytest.raises(NoxusRedirectError, match=says) as caught:
        protocol.redirect_target(request_, BASE, current, status, location, hops)
    assert caught.value.status_code == status and caught.value.endpoint == request_.endpoint
    assert "a:b" not in str(caught.value) and "k=1" not in str(caught.value)


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, NoxusBadRequestError),
        (401, NoxusAuthError),
        (403, NoxusAuthError),
        (404, NoxusNotFoundError),
        (409, NoxusConflictError),
        (413, NoxusPayloadTooLargeError),
        (422, NoxusValidationError),
        (429, NoxusRateLimitedError),
        (408, NoxusServerError),
        (500, NoxusServerError),
        (503, NoxusServerError),
        (418, type(None)),
    ],
)
def test_error_class_by_status(status: int, error_class: type) -> None:
    error = protocol.error_from_response(GET, status, b'{"detail": "no"}', {"X-Request-ID": "rq-1"})
    if error_class is not type(None):
        assert type(error) is error_class
    assert (error.status_code, error.detail, error.request_id, error.run_id) == (status, "no", "rq-1", "r")


def test_error_detail_forms() -> None:
    detail = [{"loc": ["body", "input", "Question"], "msg": "field required"}, "other"]
    error = protocol.error_from_response(POST, 422, json.dumps({"detail": detail}), {})
    assert error.detail == "body.input.Question: field required; other"
    assert protocol.error_from_response(GET, 500, b"<html>oops</html>", {}).detail == "<html>oops</html>"
    assert protocol.error_from_response(GET, 500, b"[1, 2]", {}).detail == "[1, 2]"
    assert "more characters" in str(protocol.error_from_response(GET, 500, b"x" * 5000, {}))


def test_a_sync_endpoint_504_names_the_run() -> None:
    request = protocol.create_run_sync_request("wf", {"input": {}})
    error = protocol.error_from_response(request, 504, b'{"run_id": "r9"}', {})
    assert isinstance(error, NoxusSyncEndpointTimeout) and error.run_id == "r9"


def test_parse_json_names_the_endpoint() -> None:
    with pytest.raises(NoxusProtocolError, match="not JSON") as caught:
        protocol.parse_json(GET, b"<html>")
    assert caught.value.endpoint == "GET /v1/runs/r"


# ---- Retry-After and backoff --------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
        ("inf", float("inf")),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Mon, 99 Foo 2025 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert protocol.parse_retry_after(value, now=NOW) == seconds


POLICY = RetryPolicy(backoff_initial=1.0, backoff_max=10.0)


def _wait(policy: RetryPolicy, attempt: int, retry_after: float | None = None, seed: int = 0) -> float:
    error = NoxusRateLimitedError("slow", status_code=429, retry_after=retry_after)
    return protocol.backoff_seconds(policy, attempt, error, random.Random(seed))


@pytest.mark.parametrize("seed", range(20))
def test_backoff_is_jittered_exponential_and_capped(seed: int) -> None:
    bounds = {1: (0.5, 1), 2: (1, 2), 3: (2, 4), 4: (4, 8), 5: (5, 10), 200: (5, 10)}
    for attempt, (low, high) in bounds.items():
        assert low <= _wait(POLICY, attempt, seed=seed) <= high


@pytest.mark.parametrize("retry_after", [0.0, 0.2, None])
def test_a_short_retry_after_never_shortens_the_backoff(retry_after: float | None) -> None:
    assert _wait(POLICY, 3, retry_after) >= 2.0


def test_a_long_retry_after_lengthens_the_backoff_up_to_the_cap() -> None:
    assert _wait(POLICY, 1, 6.0) == 6.0
    assert _wait(POLICY, 1, 3600.0) == 10.0
    assert _wait(POLICY, 1, float("inf")) == 10.0


def test_no_configuration_waits_less_than_the_floor() -> None:
    zero = RetryPolicy(backoff_initial=0.0, backoff_max=0.0)
    assert _wait(zero, 1) == _wait(zero, 9, 0.0) == protocol.MIN_BACKOFF_S
    assert protocol.backoff_seconds(zero, 1, ValueError("no retry_after")) == protocol.MIN_BACKOFF_S


# ---- the retry table ----------------------------------------------------------------------------


def _api(status: int, retry_after: float | None = None) -> Any:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return protocol.error_from_response(GET, status, b"", headers)


@pytest.mark.parametrize(
    ("error", "read", "create"),
    [
        (_api(408), True, False),
        (_api(429), True, True),
        (_api(500), True, False),
        (_api(502), True, False),
        (_api(503), True, False),
        (_api(503, 1), True, False),  # may hide a run: see protocol.may_have_created_run
        (_api(504), True, False),
        (_api(400), False, False),
        (_api(401), False, False),
        (_api(404), False, False),
        (_api(409), False, False),
        (_api(422), False, False),
        (NoxusTransportError("refused", reached_server=False), True, True),
        (NoxusTransportError("reset", reached_server=True), True, False),
        (NoxusTimeoutError("slow", reached_server=True), True, False),
        (NoxusTLSError("bad certificate"), False, False),
        (NoxusRedirectError("elsewhere", status_code=302), False, False),
        (NoxusProtocolError("not JSON"), False, False),
    ],
)
def test_retry_table(error: BaseException, read: bool, create: bool) -> None:
    assert protocol.is_retryable(GET, error) is read
    assert protocol.is_retryable(POST, error) is create


# ---- the SSE parser -----------------------------------------------------------------------------

FRAMES = [
    {"type": "state", "data": {"status": "running", "note": "naïve café €"}, "redisId": "1-0"},
    {"type": "content", "data": {"id": "n1", "content": "line one\nline two"}, "redisId": "1-1"},
    {"type": "state", "data": {"workflow_status": "completed"}, "redisId": "2-0"},
]


def _data(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def _stream(newline: str, *, bom: bool = False) -> bytes:
    parts = [": keep-alive", ""]
    for payload in FRAMES:
        parts += ["event: message", "data: " + _data(payload).decode(), ""]
    return (("\ufeff" if bom else "") + newline.join(parts) + newline).encode()


def _ids(events: list[protocol.RunEvent]) -> list[str | None]:
    return [event.event_id for event in events]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("bom", [False, True], ids=["", "BOM"])
def test_events_split_at_every_byte_are_parsed_whole(newline: str, bom: bool) -> None:
    body = _stream(newline, bom=bom)
    # Where each event is complete: its data line's end, and the first byte of the blank line's end.
    complete_at = [body.index(_data(f)) + len(_data(f)) + len(newline) + 1 for f in FRAMES]
    for cut in range(len(body) + 1):
        parser = SSEParser()
        first = parser.feed(body[:cut])
        events = first + parser.feed(body[cut:])
        assert _ids(events) == ["1-0", "1-1", "2-0"], (newline, bom, cut)
        assert events[0].data["note"] == "naïve café €"
        assert events[1].data["content"] == "line one\nline two"
        # Each event is out as soon as its blank line is in, not a chunk later.
        assert len(first) == sum(end <= cut for end in complete_at), (newline, bom, cut)


def test_byte_by_byte_with_every_line_ending_mixed() -> None:
    body = b"data: {\"redisId\": \"a\", \"type\": \"x\"}\r\n\r" + b"data: {\"redisId\": \"b\"}\n\r\n"
    parser = SSEParser()
    events = [event for byte in range(len(body)) for event in parser.feed(body[byte : byte + 1])]
    assert _ids(events) == ["a", "b"]


def test_an_event_ended_by_a_bare_cr_is_out_at_once() -> None:
    parser = SSEParser()
    assert _ids(parser.feed(b'data: {"redisId": "a"}\r\r')) == ["a"]
    assert parser.feed(b"\n") == []  # the LF of a split CRLF is not another blank line


def test_multi_line_data_and_other_fields() -> None:
    parser = SSEParser()
    body = b'id: 5\nevent: message\nretry: 10\ndata: {"type": "state",\ndata:"redisId": "z"}\n\n'
    events = parser.feed(body)
    assert _ids(events) == ["z"] and events[0].type == "state"


def test_frames_that_are_not_json_objects_are_skipped() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: not json\n\ndata: [1]\n\ndata: 3\n\n\n\n") == []
    assert _ids(parser.feed(b'data: {"redisId": "ok"}\n\n')) == ["ok"]


@pytest.mark.parametrize(
    ("redis_id", "event_id"),
    [
        ("7-1", "7-1"),
        (12, "12"),
        (1.5, "1.5"),
        ("", None),
        (None, None),
        (True, None),
        ({"a": 1}, None),
        ([1], None),
    ],
)
def test_event_ids_are_text_or_none(redis_id: Any, event_id: str | None) -> None:
    events = SSEParser().feed(b"data: " + json.dumps({"redisId": redis_id}).encode() + b"\n\n")
    assert events[0].event_id == event_id


def test_a_line_over_the_bound_is_a_protocol_error() -> None:
    parser = SSEParser(max_event_chars=1000)
    parser.feed(b"data: " + b"x" * 900)
    with pytest.raises(NoxusProtocolError, match="more than 1000 characters in one line"):
        parser.feed(b"x" * 200)


def test_a_line_over_the_bound_in_one_chunk_is_a_protocol_error() -> None:
    with pytest.raises(NoxusProtocolError, match="one line"):
        SSEParser(max_event_chars=1000).feed(b"data: " + b"x" * 2000 + b"\n")


def test_an_event_over_the_bound_is_a_protocol_error() -> None:
    parser = SSEParser(max_event_chars=1000)
    with pytest.raises(NoxusProtocolError, match="one event"):
        for _ in range(20):
            parser.feed(b"data: " + b"x" * 90 + b"\n")


def test_lines_up_to_the_bound_pass_and_memory_is_released() -> None:
    parser = SSEParser(max_event_chars=5000)
    payload = json.dumps({"redisId": "big", "data": {"text": "y" * 4000}}).encode()
    for start in range(0, len(payload), 7):
        assert parser.feed((b"data: " if start == 0 else b"") + payload[start : start + 7]) == []
    assert _ids(parser.feed(b"\n\n")) == ["big"]
    assert _ids(parser.feed(b'data: {"redisId": "next"}\n\n')) == ["next"]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    events = SSEParser().feed(b'data: {"redisId": "a", "data": {"t": "\xff"}}\n\n')
    assert events[0].data["t"] == "\ufffd"


@pytest.mark.parametrize(
    ("given", "file_id"),
    [
        ("spot://0f6d", "0f6d"),
        ("0f6d", "0f6d"),
        ("  spot://0f6d/ ", "0f6d"),
        ("SPOT://0f6d", "0f6d"),
        ("spot:///0f6d", "0f6d"),
        ("spot://", ""),
        (" / ", ""),
    ],
)
def test_spot_references_read_one_way(given: str, file_id: str) -> None:
    assert protocol.spot_file_id(given) == file_id
    assert protocol.spot_uri(given) == f"spot://{file_id}"
    if file_id:
        assert protocol.download_file_request(given).path == f"/v1/file/{file_id}"
