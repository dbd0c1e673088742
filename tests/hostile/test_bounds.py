"""Bounded in time and load: waits after a refusal have a floor, every request a total deadline,
and the triggerer reaches the API through the same proxy as the worker."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import http.client
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.hostile_calls import KEY, first_stream_events, run_body, trigger_event
from support.hostile_server import Conn, HostileServer, Request
from support.noxus_calls import within

from airflow_provider_noxus import protocol
from airflow_provider_noxus.exceptions import NoxusRateLimitedError, NoxusTimeoutError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy

ONE_ATTEMPT = RetryPolicy(max_attempts=1)

# ---- Retry-After never makes a hot loop ---------------------------------------------------------

PAST_DATE = email.utils.formatdate(time.time() - 3600, usegmt=True)


def refusing(retry_after: str, times: int) -> Callable[[Request, Conn], None]:
    """429 with that ``Retry-After`` ``times`` times (-1: always), then the run."""

    answered: list[Request] = []

    def handler(request: Request, conn: Conn) -> None:
        answered.append(request)
        if times < 0 or len(answered) <= times:
            conn.reply(429, {"detail": "slow down"}, headers={"Retry-After": retry_after})
        else:
            conn.reply(200, run_body())

    return handler


@pytest.mark.parametrize("retry_after", ["0", "-5", PAST_DATE, "nan"])
def test_a_short_or_bad_retry_after_never_shortens_the_backoff(
    serve: Any, connect: Any, api_for: Any, sleeps: Any, retry_after: str
) -> None:
    server = serve(refusing(retry_after, times=2))
    assert api_for(connect(server.url))("get_run_status", "run-1")["status"] == "completed"
    # FAST_POLICY: attempt n waits within [c/2, c], c = 0.2 * 2**(n-1).
    assert len(sleeps.waits) == 2
    assert 0.1 <= sleeps.waits[0] <= 0.2
    assert 0.2 <= sleeps.waits[1] <= 0.4


def test_max_backoff_zero_still_waits_the_floor(serve: Any, connect: Any, api_for: Any, sleeps: Any) -> None:
    server = serve(refusing("0", times=-1))
    hook = connect(server.url, policy=None, max_backoff=0, retry_attempts=4)
    with pytest.raises(NoxusRateLimitedError):
        api_for(hook)("get_run_status", "run-1")
    assert sleeps.waits == [protocol.MIN_BACKOFF_S] * 3


def test_a_429_storm_with_retry_after_zero_does_not_hammer_from_the_trigger(
    serve: Any, connect: Any
) -> None:
    server = serve(refusing("0", times=-1))
    hook = connect(server.url, policy=None, retry_attempts=2, max_backoff=0)
    event = trigger_event(hook, wait_strategy="poll", poll_interval=0.01, deadline=time.time() + 1.5)
    assert event["status"] == "timeout"
    # At most one request per 0.1 s floor (+ the first): the unbounded loop sent thousands.
    assert 2 <= len(server.requests) <= 20


# ---- every request has a total deadline ---------------------------------------------------------


def trickling_headers(request: Request, conn: Conn) -> None:
    conn.trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"x" * 1000, 0.1)


def trickling_body(request: Request, conn: Conn) -> None:
    conn.head(200, {"Content-Type": "application/json", "Content-Length": "1000"})
    conn.trickle(b" " * 1000, 0.1)


@pytest.mark.parametrize("handler", [trickling_headers, trickling_body])
@pytest.mark.parametrize(("method", "args"), [("get_run", ("wf-1", "run-1")), ("create_run", ("wf-1", {}))])
def test_a_trickling_answer_times_out_at_the_connection_timeout(
    serve: Any, connect: Any, api_for: Any, handler: Any, method: str, args: tuple[Any, ...]
) -> None:
    server = serve(handler)
    hook = connect(server.url, policy=ONE_ATTEMPT, timeout=1)
    started = time.monotonic()
    with pytest.raises(NoxusTimeoutError, match="No complete answer within the 1 s timeout") as caught:
        api_for(hook)(method, *args)
    assert time.monotonic() - started < 5  # 1 s, and a busy machine's slack
    assert caught.value.reached_server
    assert len(server.requests) == 1


@pytest.mark.parametrize("handler", [trickling_headers, trickling_body])
def test_a_request_timeout_is_its_total_deadline_on_both_transports(
    serve: Any, connect: Any, call_mode: str, handler: Any
) -> None:
    """What the wait relies on: ``ApiRequest.timeout`` and a per-call policy, sync and async."""
    server = serve(handler)
    hook: NoxusHook = connect(server.url, timeout=30)
    request = dataclasses.replace(protocol.get_run_status_request("run-1"), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(NoxusTimeoutError, match=r"0\.5 s"):
        if call_mode == "sync":
            within(10, hook._transport.call_json, request, policy=ONE_ATTEMPT)
        else:

            async def once() -> None:
                async with hook.async_client() as client:
                    await client._transport.call_json(request, policy=ONE_ATTEMPT)

            asyncio.run(asyncio.wait_for(once(), 10))
    assert time.monotonic() - started < 4
    assert len(server.requests) == 1


def test_the_trigger_is_not_held_by_a_trickling_server(serve: Any, connect: Any) -> None:
    server = serve(trickling_body)
    hook = connect(server.url, policy=None, timeout=0.5, retry_attempts=1)
    with pytest.raises(asyncio.TimeoutError):
        trigger_event(hook, wait_strategy="poll", poll_interval=0.1, limit=3.0)
    # Each status check gave up after 0.5 s and the trigger went on: more than one request.
    assert len(server.requests) >= 2


def slow_but_alive_stream(request: Request, conn: Conn) -> None:
    conn.head(200, {"Content-Type": "text/event-stream"})
    for _ in range(8):
        if conn.pause(0.3):
            return
        conn.send(b": keep-alive\n\n")
    conn.send(b'data: {"type": "state", "data": {"workflow_status": "completed"}, "redisId": "9-0"}\n\n')
    conn.close()


def test_the_event_stream_has_no_total_deadline_only_a_bound_between_chunks(
    serve: Any, connect: Any, call_mode: str
) -> None:
    """A guard: the total deadline of requests must not cut a stream that keeps talking."""
    server = serve(slow_but_alive_stream)
    events = first_stream_events(connect(server.url, timeout=1), call_mode, 2, limit=10)
    assert [event.workflow_status for event in events] == ["completed"]


# ---- proxies: the triggerer goes where the worker goes ------------------------------------------


def forwarding_to(target: Callable[[], HostileServer]) -> Callable[[Request, Conn], None]:
    """A plain HTTP proxy that sends every request it is given to ``target()``, whatever its host."""

    def handler(request: Request, conn: Conn) -> None:
        assert request.target.startswith("http://"), request.target
        upstream = http.client.HTTPConnection("127.0.0.1", target().port, timeout=10)
        try:
            headers = {k: v for k, v in request.headers.items() if not k.startswith("proxy-")}
            path = "/" + request.target.split("/", 3)[3]
            upstream.request(request.method, path, body=request.body or None, headers=headers)
            answer = upstream.getresponse()
            conn.reply(answer.status, answer.read(), headers={"Content-Type": "application/json"})
        finally:
            upstream.close()

    return handler


@pytest.fixture
def proxied(serve: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[HostileServer, HostileServer]:
    """(proxy, API): ``HTTP_PROXY`` points at the proxy, which forwards to the API."""
    api_server = serve(lambda request, conn: conn.reply(200, run_body()))
    proxy = serve(forwarding_to(lambda: api_server))
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return proxy, api_server


def test_a_host_reachable_only_through_the_proxy_is_reached(
    proxied: tuple[HostileServer, HostileServer], connect: Any, api_for: Any
) -> None:
    proxy, api_server = proxied
    # ".invalid" never resolves: only the proxy can reach this host.
    hook = connect(f"http://noxus.invalid:{api_server.port}")
    assert api_for(hook)("get_run_status", "run-1")["status"] == "completed"
    assert [request.target for request in proxy.requests] == [
        f"http://noxus.invalid:{api_server.port}/v1/runs/run-1"
    ]
    assert api_server.requests[0].headers["x-api-key"] == KEY


def test_the_trigger_goes_through_the_proxy(
    proxied: tuple[HostileServer, HostileServer], connect: Any
) -> None:
    proxy, api_server = proxied
    hook = connect(f"http://noxus.invalid:{api_server.port}")
    assert trigger_event(hook, wait_strategy="poll")["status"] == "success"
    assert proxy.requests


def test_no_proxy_sends_directly(
    proxied: tuple[HostileServer, HostileServer], connect: Any, api_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other half of the proxy tests: a host ``NO_PROXY`` names is reached directly."""
    proxy, api_server = proxied
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert api_for(connect(api_server.url))("get_run_status", "run-1")["status"] == "completed"
    assert proxy.requests == []
    assert len(api_server.requests) == 1
