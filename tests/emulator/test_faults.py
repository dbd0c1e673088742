"""Fault injection through the control API and from start-up options; counters and reset."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from typing import Any

import aiohttp
import pytest
import requests
from support.waiting import wait_until

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.emulator.faults import FAULT_KINDS, FAULT_SPEC_HELP, parse_fault_spec
from airflow_provider_noxus.emulator.server import SHUTDOWN_TIMEOUT
from emulator.helpers import Api, parse_sse


def status_url(api: Api, run: dict) -> str:
    return api.url(f"/v1/runs/{run['id']}")


def create_path(api: Api, endpoint: str = "create_run", workflow: str = "echo") -> str:
    suffix = "/sync" if endpoint == "create_run_sync" else ""
    return f"/v1/workflows/{api.wid(workflow)}/runs{suffix}"


def listed_runs(api: Api, workflow: str = "echo") -> list[dict]:
    response = api.session.get(api.url(f"/v1/workflows/{api.wid(workflow)}/runs"), timeout=10)
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()["items"]
    return items


def raw_request(api: Api, method: str, path: str, body: bytes = b"") -> socket.socket:
    """Send one request on a new connection (5 s per read); the caller reads the answer's bytes."""
    host, port = api.emu.host, api.emu.port
    sock = socket.create_connection((host, port), timeout=5)
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"X-API-Key: {api.session.headers['X-API-Key']}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def read_to_close(sock: socket.socket) -> tuple[str, bytes]:
    """Every byte until the server closes the connection, as (head, body)."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def header_names(head: str) -> set[str]:
    return {line.split(":", 1)[0].lower() for line in head.split("\r\n")[1:]}


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


@pytest.mark.parametrize(
    ("status", "retry_after", "header"),
    [
        (429, None, "1"),
        (429, 0, "0"),
        (429, 2.5, "2.5"),
        (503, -5, "-5"),
        (503, "0.25", "0.25"),
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (503, "Fri, 31 Dec 2100 23:59:59 GMT", "Fri, 31 Dec 2100 23:59:59 GMT"),
        (429, "soon, really", "soon, really"),
    ],
)
def test_status_fault_sends_retry_after_verbatim(
    api: Api, status: int, retry_after: float | str | None, header: str
) -> None:
    api.emu.control.add_fault("me", "status", status=status, retry_after=retry_after)

    response = api.session.get(api.url("/v1/admin/me"), timeout=10)

    assert response.status_code == status
    assert response.headers["Retry-After"] == header


@pytest.mark.parametrize(("status", "retry_after"), [(429, "none"), (503, None)])
def test_status_fault_without_retry_after(api: Api, status: int, retry_after: str | None) -> None:
    api.emu.control.add_fault("me", "status", status=status, retry_after=retry_after)

    response = api.session.get(api.url("/v1/admin/me"), timeout=10)

    assert response.status_code == status
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_fault_answers_its_status_and_location(api: Api, status: int) -> None:
    run = api.create_ok("echo", {"text": "a"})
    location = "http://127.0.0.1:9/elsewhere/v1/runs"  # another origin: another port
    api.emu.control.add_fault("get_run_status", "redirect", status=status, location=location)

    response = api.session.get(status_url(api, run), allow_redirects=False, timeout=10)

    assert response.status_code == status
    assert response.headers["Location"] == location
    assert response.content == b""
    assert api.session.get(status_url(api, run), timeout=10).status_code == 200
    assert api.emu.control.counters()["requests"]["get_run_status"] == {str(status): 1, "200": 1}


def test_redirect_fault_hits_count_requests(api: Api) -> None:
    api.emu.control.add_fault("me", "redirect", location="https://127.0.0.1/v1/admin/me", count=2)

    codes = [
        api.session.get(api.url("/v1/admin/me"), allow_redirects=False, timeout=10).status_code
        for _ in range(3)
    ]

    assert codes == [307, 307, 200]


def test_redirect_to_a_relative_location_with_the_request_path(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.emu.control.add_fault("get_run_status", "redirect", status=308, location="{path}")
    assert api.emu.control.faults()[0]["location"] == "{path}"

    response = api.session.get(status_url(api, run) + "?x=1", timeout=10)

    assert [hop.status_code for hop in response.history] == [308]
    assert response.history[0].headers["Location"] == f"/v1/runs/{run['id']}?x=1"
    assert response.status_code == 200
    assert response.json()["id"] == run["id"]


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


def test_trickle_fault_sends_the_answer_a_byte_at_a_time(api: Api) -> None:
    whole = api.session.get(api.url("/v1/admin/me"), timeout=10).content
    api.emu.control.add_fault("me", "trickle", seconds=0.05)

    arrivals: list[float] = []  # when each body byte arrived
    data = b""
    with raw_request(api, "GET", "/v1/admin/me") as sock:
        while len(arrivals) < 9:
            chunk = sock.recv(64)
            assert chunk, "the connection closed before 9 bytes of body"
            data += chunk
            _, separator, body = data.partition(b"\r\n\r\n")
            arrivals += [time.monotonic()] * (len(body) - len(arrivals) if separator else 0)
    head = data.partition(b"\r\n\r\n")[0].decode()

    assert head.startswith("HTTP/1.1 200")
    assert f"Content-Length: {len(whole)}" in head.split("\r\n")
    assert body == whole[: len(body)]
    assert 0.9 * 8 * 0.05 <= arrivals[8] - arrivals[0] < 8 * 0.05 + 5
    assert api.session.get(api.url("/v1/admin/me"), timeout=5).content == whole


def test_a_per_read_timeout_does_not_bound_a_trickling_answer(api: Api) -> None:
    api.emu.control.add_fault("create_run", "trickle", seconds=0.05, chunk_bytes=16)

    started = time.monotonic()
    response = api.session.post(api.url(create_path(api)), json={"input": {"text": "a"}}, timeout=(5, 0.3))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    chunks = math.ceil(len(response.content) / 16)
    assert chunks > 10
    assert 0.9 * 0.05 * (chunks - 1) <= elapsed < 0.05 * chunks + 10
    assert [run["id"] for run in listed_runs(api)] == [response.json()["id"]]
    assert api.emu.control.counters()["runs_created_total"] == 1


def test_trickle_fault_slows_the_event_stream_without_changing_it(api: Api) -> None:
    run = api.wait_final(api.create_ok("echo", {"text": "a"}))
    url = api.url(f"/v1/runs/{run['id']}/events")
    plain = api.session.get(url, timeout=10).content
    api.emu.control.add_fault("run_events", "trickle", seconds=0.02, chunk_bytes=64)

    started = time.monotonic()
    trickled = api.session.get(url, timeout=(5, 2)).content
    elapsed = time.monotonic() - started

    assert trickled == plain
    assert 0.9 * 0.02 * (math.ceil(len(plain) / 64) - 1) <= elapsed < 30


def test_silent_stream_sends_only_keep_alives_while_the_run_completes(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.emu.control.add_fault("run_events", "silent_stream", seconds=0.1)

    url = api.url(f"/v1/runs/{run['id']}/events")
    started = time.monotonic()
    with api.session.get(url, stream=True, timeout=(5, 5)) as response:
        lines = response.iter_lines(decode_unicode=True)
        final = api.wait_final(run)
        completed_at = time.monotonic()
        received = []
        while time.monotonic() < completed_at + 0.5:
            received.append(next(lines))
        elapsed = time.monotonic() - started
        open_streams = api.emu.control.counters()["open_streams"]

    assert final["status"] == "completed"
    assert set(received) == {": keep-alive", ""}
    assert 5 <= received.count(": keep-alive") <= elapsed / 0.1 + 2  # one every 0.1 s, no flood
    assert open_streams == 1
    wait_until(lambda: api.emu.control.counters()["open_streams"] == 0, timeout=10, what="the stream to end")


def test_silent_stream_keeps_the_default_interval_and_ends_on_reset(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})
    api.emu.control.add_fault("run_events", "silent_stream")

    url = api.url(f"/v1/runs/{run['id']}/events")
    started = time.monotonic()
    with api.session.get(url, stream=True, timeout=(5, 5)) as response:
        lines = response.iter_lines(decode_unicode=True)
        first = next(lines)
        waited = time.monotonic() - started
        api.emu.control.reset()
        rest = list(lines)

    assert first == ": keep-alive"
    assert waited >= 0.9 * 0.2  # the emulator's keep_alive_seconds
    assert set(rest) <= {": keep-alive", ""}


def test_lose_answer_timeout_makes_the_run_then_holds_the_answer(api: Api) -> None:
    api.emu.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=10)

    with pytest.raises(requests.ReadTimeout):
        api.session.post(api.url(create_path(api)), json={"input": {"text": "a"}}, timeout=(5, 0.5))

    assert len(listed_runs(api)) == 1
    assert api.emu.control.counters()["runs_created_total"] == 1


def test_lose_answer_timeout_sends_the_answer_late(api: Api) -> None:
    api.emu.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=0.3)

    started = time.monotonic()
    response = api.session.post(api.url(create_path(api)), json={"input": {"text": "a"}}, timeout=10)

    assert time.monotonic() - started >= 0.9 * 0.3
    assert response.status_code == 200
    assert [run["id"] for run in listed_runs(api)] == [response.json()["id"]]


def test_lose_answer_timeout_close_closes_the_connection_without_an_answer(api: Api) -> None:
    api.emu.control.add_fault("create_run", "lose_answer", mode="timeout_close", seconds=0.3)

    started = time.monotonic()
    head, body = read_to_close(raw_request(api, "POST", create_path(api), b'{"input": {"text": "a"}}'))

    assert time.monotonic() - started >= 0.9 * 0.3
    assert (head, body) == ("", b"")
    assert len(listed_runs(api)) == 1
    assert api.emu.control.counters()["requests"]["create_run"] == {"closed": 1}


@pytest.mark.parametrize("endpoint", ["create_run", "create_run_sync"])
def test_lose_answer_truncate_announces_more_body_than_it_sends(api: Api, endpoint: str) -> None:
    api.emu.control.add_fault(endpoint, "lose_answer", mode="truncate", count=2)

    head, body = read_to_close(
        raw_request(api, "POST", create_path(api, endpoint), b'{"input": {"text": "a"}}')
    )
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.session.post(api.url(create_path(api, endpoint)), json={"input": {"text": "a"}}, timeout=10)

    [length] = [line.split(": ")[1] for line in head.split("\r\n") if line.startswith("Content-Length:")]
    assert head.startswith("HTTP/1.1 200 OK")
    assert len(body) == int(length) // 2
    runs = listed_runs(api)
    assert len(runs) == 2
    assert body.startswith(b'{"id":"') and runs[1]["id"].encode() in body
    assert api.emu.control.counters()["requests"][endpoint] == {"truncated": 2}


async def test_aiohttp_clients_see_a_truncated_answer_and_a_trickle_past_their_read_timeout(api: Api) -> None:
    api.emu.control.add_fault("create_run", "lose_answer", mode="truncate")
    api.emu.control.add_fault("get_run_status", "trickle", seconds=0.05, chunk_bytes=32)
    headers = {"X-API-Key": str(api.session.headers["X-API-Key"])}

    timeout = aiohttp.ClientTimeout(total=30, sock_read=0.3)
    async with aiohttp.ClientSession(api.emu.url, headers=headers, timeout=timeout) as session:
        async with session.post(create_path(api), json={"input": {"text": "a"}}) as truncated:
            with pytest.raises(aiohttp.ClientPayloadError):
                await truncated.read()
        [run] = await asyncio.to_thread(listed_runs, api)
        started = time.monotonic()
        async with session.get(f"/v1/runs/{run['id']}") as trickled:
            body = await trickled.read()
        elapsed = time.monotonic() - started

    assert truncated.status == 200
    assert json.loads(body)["id"] == run["id"]
    chunks = math.ceil(len(body) / 32)
    assert max(0.3, 0.9 * 0.05 * (chunks - 1)) <= elapsed < 0.05 * chunks + 10  # past sock_read


def test_lose_answer_cut_json_sends_a_body_that_stops_mid_json(api: Api) -> None:
    api.emu.control.add_fault("create_run", "lose_answer", mode="cut_json", count=2)

    head, body = read_to_close(raw_request(api, "POST", create_path(api), b'{"input": {"text": "a"}}'))
    response = api.session.post(api.url(create_path(api)), json={"input": {"text": "a"}}, timeout=10)

    assert head.startswith("HTTP/1.1 200 OK")
    assert not {"content-length", "transfer-encoding"} & header_names(head)
    assert body.startswith(b'{"id":"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    assert api.emu.control.counters()["runs_created_total"] == 2


@pytest.mark.parametrize("endpoint", ["create_run", "create_run_sync"])
def test_lose_answer_502_answers_a_proxy_page_after_making_the_run(api: Api, endpoint: str) -> None:
    api.emu.control.add_fault(endpoint, "lose_answer", mode="502")

    response = api.session.post(
        api.url(create_path(api, endpoint)), json={"input": {"text": "a"}}, timeout=10
    )

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in response.text
    [run] = listed_runs(api)
    assert api.wait_final(run)["status"] == "completed"
    assert api.emu.control.counters()["requests"][endpoint] == {"502": 1}


def test_wildcard_lose_answer_spares_the_event_stream(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    api.emu.control.add_fault("*", "lose_answer", mode="502", count=-1)

    status = api.session.get(status_url(api, run), timeout=10)
    frames = [f for f in api.events(run["id"]) if "comment" not in f]

    assert status.status_code == 502
    assert frames[-1]["data"]["workflow_status"] == "completed"


def test_stopping_the_server_ends_trickles_silent_streams_and_held_answers_at_once() -> None:
    outcomes: dict[str, str] = {}

    def call(name: str, method: str, url: str, **kwargs: Any) -> None:
        try:
            response = requests.request(method, url, headers=headers, timeout=(5, 20), **kwargs)
            outcomes[name] = str(response.status_code)
        except requests.RequestException as error:
            outcomes[name] = type(error).__name__

    server = EmulatorServer().start()
    try:
        headers = {"X-API-Key": server.api_key}
        create_url = f"{server.url}/v1/workflows/{server.control.workflow_id('echo')}/runs"
        run = requests.post(create_url, json={"input": {"text": "a"}}, headers=headers, timeout=10).json()
        server.control.add_fault("me", "trickle", seconds=1.0)
        server.control.add_fault("run_events", "silent_stream", seconds=1.0)
        server.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=60)
        calls = [
            ("trickle", "GET", f"{server.url}/v1/admin/me", {}),
            ("silent", "GET", f"{server.url}/v1/runs/{run['id']}/events", {}),
            ("held", "POST", create_url, {"json": {"input": {"text": "b"}}}),
        ]
        threads = [threading.Thread(target=call, args=c[:3], kwargs=c[3]) for c in calls]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: (
                (c := server.control.counters())["requests"].get("me") == {"200": 1}
                and c["open_streams"] == 1
                and c["runs_created_total"] == 2
            ),
            timeout=10,
            what="the three faults to be under way",
        )
        started = time.monotonic()
        server.stop()
        stopping = time.monotonic() - started
        for thread in threads:
            thread.join(10)
    finally:
        server.stop()

    assert stopping < SHUTDOWN_TIMEOUT  # none of them waited for the forced end of the shutdown
    assert not any(thread.is_alive() for thread in threads)
    assert outcomes == {"trickle": "ChunkedEncodingError", "silent": "200", "held": "200"}


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
        {"endpoint": "get_run", "kind": "status", "status": 429, "retry_after": ""},
        {"endpoint": "get_run", "kind": "status", "status": 429, "retry_after": "1\r\nX-Injected: 1"},
        {"endpoint": "get_run", "kind": "redirect"},
        {"endpoint": "get_run", "kind": "redirect", "status": 200, "location": "/x"},
        {"endpoint": "get_run", "kind": "redirect", "location": "/x\r\nSet-Cookie: a=b"},
        {"endpoint": "get_run", "kind": "trickle", "chunk_bytes": 0},
        {"endpoint": "get_run", "kind": "trickle", "seconds": -1},
        {"endpoint": "get_run", "kind": "silent_stream"},
        {"endpoint": "run_events", "kind": "silent_stream", "seconds": 0},
        {"endpoint": "run_events", "kind": "lose_answer", "mode": "502"},
        {"endpoint": "create_run", "kind": "lose_answer"},
        {"endpoint": "create_run", "kind": "lose_answer", "mode": "explode"},
        {"endpoint": "create_run", "kind": "lose_answer", "mode": "timeout", "seconds": "long"},
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
        ("get_run:status:429:1:2", {"status": 429, "count": 1, "retry_after": "2"}),
        ("*:latency:0.5", {"endpoint": "*", "kind": "latency", "seconds": 0.5, "count": 1}),
        ("run_events:drop_stream:3:-1", {"after_frames": 3, "count": -1}),
        ("create_run:reset", {"kind": "reset", "count": 1}),
        ("create_run_sync:sync_timeout:2", {"kind": "sync_timeout", "count": 2}),
        ("get_run:status:429", {"retry_after": "1"}),
        ("get_run:status:503", {"retry_after": None}),
        ("get_run:status:429:1:0", {"count": 1, "retry_after": "0"}),
        ("get_run:status:429::-3", {"count": 1, "retry_after": "-3"}),
        ("get_run:status:429:2:none", {"count": 2, "retry_after": "none"}),
        (
            "get_run:status:503:1:Wed, 21 Oct 2015 07:28:00 GMT",
            {"status": 503, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"},
        ),
        (
            "get_run:redirect:307:http://127.0.0.1:9/v1/x",
            {"kind": "redirect", "status": 307, "count": 1, "location": "http://127.0.0.1:9/v1/x"},
        ),
        (
            "get_run:redirect:301:-1:https://127.0.0.1:8443/v1/x?a=b",
            {"status": 301, "count": -1, "location": "https://127.0.0.1:8443/v1/x?a=b"},
        ),
        ("get_run:redirect:302:/v1/elsewhere", {"status": 302, "count": 1, "location": "/v1/elsewhere"}),
        ("get_run:redirect::2:{path}", {"status": 307, "count": 2, "location": "{path}"}),
        ("get_run:trickle:0.5", {"kind": "trickle", "seconds": 0.5, "count": 1, "chunk_bytes": 1}),
        ("*:trickle:0.1:-1:8", {"endpoint": "*", "seconds": 0.1, "count": -1, "chunk_bytes": 8}),
        ("run_events:silent_stream", {"kind": "silent_stream", "seconds": None, "count": 1}),
        ("run_events:silent_stream:2:3", {"seconds": 2.0, "count": 3}),
        ("create_run:lose_answer:timeout", {"kind": "lose_answer", "mode": "timeout", "seconds": 30.0}),
        ("create_run_sync:lose_answer:timeout_close:1:45", {"mode": "timeout_close", "seconds": 45.0}),
        ("create_run:lose_answer:truncate:2", {"mode": "truncate", "count": 2, "seconds": None}),
        ("create_run:lose_answer:cut_json", {"mode": "cut_json", "count": 1}),
        ("*:lose_answer:502:-1", {"endpoint": "*", "mode": "502", "count": -1}),
    ],
)
def test_fault_specs_of_the_command_line(spec: str, expected: dict) -> None:
    fault = vars(parse_fault_spec(spec))

    assert {key: fault[key] for key in expected} == expected


@pytest.mark.parametrize(
    "spec",
    [
        "get_run",
        "get_run:status:abc",
        "get_run:reset:1:2",
        "nodes:drop_stream:1",
        "get_run:redirect:307",
        "get_run:redirect:307:5",
        "get_run:redirect:200:/v1/x",
        "get_run:trickle:0.1:1:0",
        "get_run:trickle:0.1:1:8:9",
        "get_run:silent_stream",
        "run_events:silent_stream:0",
        "run_events:lose_answer:502",
        "create_run:lose_answer",
        "create_run:lose_answer:explode",
        "create_run:lose_answer:timeout:1:soon",
    ],
)
def test_bad_fault_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def test_the_spec_help_names_every_kind() -> None:
    assert all(f"  {kind}" in FAULT_SPEC_HELP for kind in FAULT_KINDS)


def test_faults_given_at_start_up_apply() -> None:
    with EmulatorServer(faults=[parse_fault_spec("nodes:status:503:1")]) as server:
        headers = {"X-API-Key": server.api_key}
        codes = [requests.get(f"{server.url}/v1/nodes", headers=headers).status_code for _ in range(2)]

    assert codes == [503, 200]
