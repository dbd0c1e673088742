"""The API key never leaves the configured origin: redirects elsewhere are refused before a request
is sent there, on both transports, for reads and for run creation, and in the trigger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.hostile_calls import KEY, run_body, trigger_event
from support.hostile_server import Conn, HostileServer, Request, self_signed_certificate

from airflow_provider_noxus.exceptions import NoxusRedirectError
from airflow_provider_noxus.hooks.noxus import NoxusHook


def redirecting_to(location: Callable[[Request], str], status: int = 307) -> Callable[[Request, Conn], None]:
    def handler(request: Request, conn: Conn) -> None:
        conn.reply(status, {"detail": "moved"}, headers={"Location": location(request)})

    return handler


def recorder(request: Request, conn: Conn) -> None:
    """The other origin: answers like the API would, so that a leak would also 'work'."""
    conn.reply(200, run_body())


CALLS = {
    "get": ("get_run_status", ("run-1",)),
    "post": ("create_run", ("wf-1", {"text": "x"})),
}


@pytest.fixture(params=sorted(CALLS))
def call(request: pytest.FixtureRequest) -> tuple[str, tuple[Any, ...]]:
    return CALLS[str(request.param)]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_port_is_refused_and_nothing_reaches_it(
    serve: Any, connect: Any, api_for: Any, sleeps: Any, call: Any, status: int
) -> None:
    other = serve(recorder)
    target = f"http://user:pw@127.0.0.1:{other.port}/v1/runs/run-1?token=abc"
    api_server = serve(redirecting_to(lambda request: target, status))
    name, args = call
    with pytest.raises(NoxusRedirectError) as caught:
        api_for(connect(api_server.url))(name, *args)
    message = str(caught.value)
    assert f"http://127.0.0.1:{other.port}" in message
    assert "fix" in message.lower() or "set the connection's host" in message.lower()
    assert f"HTTP {status}" in message
    assert "user:pw" not in message and "token=abc" not in message and KEY not in message
    assert other.requests == []
    assert len(api_server.requests) == 1  # refused at once: never retried
    assert sleeps.waits == []


def test_redirect_to_another_host_name_is_refused(serve: Any, connect: Any, api_for: Any, call: Any) -> None:
    # "localhost" is this very server, under another host name: another origin all the same.
    api_server = serve(redirecting_to(lambda request: f"http://localhost:{api_server.port}{request.target}"))
    name, args = call
    with pytest.raises(NoxusRedirectError, match=r"http://localhost:\d+"):
        api_for(connect(api_server.url))(name, *args)
    assert len(api_server.requests) == 1


def test_redirect_from_https_to_http_is_refused(
    serve: Any, connect: Any, api_for: Any, call: Any, tmp_path: Any
) -> None:
    plain = serve(recorder)
    to_plain = redirecting_to(lambda request: f"http://127.0.0.1:{plain.port}{request.target}")
    api_server = serve(to_plain, tls=self_signed_certificate(tmp_path).server_context())
    hook = connect(api_server.url, verify_ssl=False)
    name, args = call
    with pytest.raises(NoxusRedirectError, match="another origin"):
        api_for(hook)(name, *args)
    assert plain.requests == []


def test_same_origin_redirect_is_followed_with_the_key_and_body(
    serve: Any, connect: Any, api_for: Any
) -> None:
    """A guard (the libraries followed it too): refusing other origins still follows this one."""
    def handler(request: Request, conn: Conn) -> None:
        if request.path == "/v1/workflows/wf-1/runs":
            conn.reply(307, b"", headers={"Location": "/v2/workflows/wf-1/runs"})
        else:
            conn.reply(200, run_body("queued"))

    api_server = serve(handler)
    run = api_for(connect(api_server.url))("create_run", "wf-1", {"text": "x"})
    assert run["id"] == "run-1"
    first, second = api_server.requests
    assert second.path == "/v2/workflows/wf-1/runs"
    assert second.method == "POST" and second.json() == first.json() == {"input": {"text": "x"}}
    assert second.headers["x-api-key"] == KEY


def test_post_redirect_that_drops_the_body_is_refused(serve: Any, connect: Any, api_for: Any) -> None:
    api_server = serve(redirecting_to(lambda request: "/elsewhere", status=302))
    with pytest.raises(NoxusRedirectError, match="drop its body"):
        api_for(connect(api_server.url))("create_run", "wf-1", {"text": "x"})
    assert len(api_server.requests) == 1


def test_redirect_loop_ends_after_the_hop_limit(serve: Any, connect: Any, api_for: Any) -> None:
    api_server = serve(redirecting_to(lambda request: "/v1/runs/run-1"))
    with pytest.raises(NoxusRedirectError, match="more than 5 times"):
        api_for(connect(api_server.url))("get_run_status", "run-1")
    assert len(api_server.requests) == 6


@pytest.mark.parametrize("strategy", ["poll", "stream"])
def test_trigger_ends_with_an_error_naming_the_redirect(
    serve: Any, connect: Any, strategy: str
) -> None:
    other: HostileServer = serve(recorder)
    api_server = serve(redirecting_to(lambda request: f"http://127.0.0.1:{other.port}{request.target}"))
    event = trigger_event(connect(api_server.url), wait_strategy=strategy)
    assert event["status"] == "error"
    assert f"http://127.0.0.1:{other.port}" in event["message"]
    assert other.requests == []


def test_the_key_is_never_sent_to_another_origin(serve: Any, connect: Any) -> None:
    """Every path at once: whatever the hook does, the other origin sees no request at all."""
    other = serve(recorder)
    api_server = serve(redirecting_to(lambda request: f"http://127.0.0.1:{other.port}{request.target}"))
    hook: NoxusHook = connect(api_server.url)
    for method, args in [("get_me", ()), ("list_runs", ("wf-1",)), ("stop_run", ("run-1",))]:
        with pytest.raises(NoxusRedirectError):
            getattr(hook, method)(*args)
    assert other.requests == []
