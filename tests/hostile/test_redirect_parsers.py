"""A redirect's ``Location`` is judged by the parser that sends the request, or refused.

Parsers disagree on some URLs: ``urllib.parse`` reads ``http://a\\@b/`` as host ``b``, urllib3 (which
``requests`` connects with) as host ``a``. Each case below points a redirect of the API server at a
second server in a way some parser could mistake for the API's own origin; the second server must
receive nothing (neither the key nor a run's inputs), on both transports and in the trigger, and the
refusal is final: a typed :class:`NoxusRedirectError`, never retried, never a bare ``ValueError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from support.hostile_calls import KEY, run_body, trigger_event
from support.hostile_server import Conn, HostileServer, Request

from airflow_provider_noxus.exceptions import NoxusRedirectError

#: ``Location`` templates; ``{api}`` and ``{other}`` are the two servers' ports.
AMBIGUOUS = {
    "backslash before @": "http://127.0.0.1:{other}\\@127.0.0.1:{api}/v1/runs/run-1",
    "backslash as a slash": "http://127.0.0.1:{other}\\/127.0.0.1:{api}/v1/runs/run-1",
    "tab before @": "http://127.0.0.1:{other}\t@127.0.0.1:{api}/v1/runs/run-1",
    "space before @": "http://127.0.0.1:{other} @127.0.0.1:{api}/v1/runs/run-1",
    "control character": "http://127.0.0.1:{other}\x0b@127.0.0.1:{api}/v1/runs/run-1",
    "non-ASCII character": "http://127.0.0.1:{other}\xa0@127.0.0.1:{api}/v1/runs/run-1",
    "@ in userinfo": "http://127.0.0.1:{api}@127.0.0.1:{other}/v1/runs/run-1",
    "percent-encoded @": "http://127.0.0.1:{api}%40127.0.0.1:{other}/v1/runs/run-1",
    "percent-encoded slash": "http://127.0.0.1:{other}%2F@127.0.0.1:{api}/v1/runs/run-1",
    "userinfo on the same origin": "http://user:pw@127.0.0.1:{api}/v1/runs/run-1",
    "IPv6 loopback": "http://[::1]:{api}/v1/runs/run-1",
    "IPv6 brackets not an IP": "http://[not-an-ip]:{api}/v1/runs/run-1",
    "unclosed IPv6 bracket": "http://[::1:{api}/v1/runs/run-1",
    "port not a number": "http://127.0.0.1:{api}x/v1/runs/run-1",
    "another port": "http://127.0.0.1:{other}/v1/runs/run-1",
    "another scheme": "https://127.0.0.1:{api}/v1/runs/run-1",
    "scheme-relative": "//127.0.0.1:{other}/v1/runs/run-1",
}

#: Same origin, spelled otherwise: followed.
SAME_ORIGIN = {
    "upper-case scheme and path": "HTTP://127.0.0.1:{api}/v2/runs/run-1",
    "leading zero in the port": "http://127.0.0.1:0{api}/v2/runs/run-1",
}


def redirecting(location: str, other: HostileServer) -> Callable[[Request, Conn], None]:
    """An API server that redirects everything under /v1 to ``location`` (its ports filled in)."""

    def handler(request: Request, conn: Conn) -> None:
        if request.path.startswith("/v1/"):
            target = location.format(api=conn.sock.getsockname()[1], other=other.port)
            conn.head(307, {"Location": target, "Content-Length": "0"})
        else:
            conn.reply(200, run_body())

    return handler


def answering(request: Request, conn: Conn) -> None:
    """The second server answers like the API, so that a leak would also 'work'."""
    conn.reply(200, run_body())


CALLS = {
    "read": ("get_run_status", ("run-1",)),
    "create": ("create_run", ("wf-1", {"secret_input": "the user's data"})),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_location_read_two_ways_is_refused_and_nothing_reaches_the_other_server(
    serve: Any, connect: Any, api_for: Any, sleeps: Any, case: str, call: str
) -> None:
    other = serve(answering)
    api_server = serve(redirecting(AMBIGUOUS[case], other))
    name, args = CALLS[call]
    with pytest.raises(NoxusRedirectError) as caught:
        api_for(connect(api_server.url))(name, *args)
    assert other.requests == [], f"{case}: the other server received {len(other.requests)} request(s)"
    assert len(api_server.requests) == 1, "a refused redirect is final: never retried"
    assert sleeps.waits == []
    message = str(caught.value)
    assert KEY not in message and "user:pw" not in message


@pytest.mark.parametrize("case", sorted(SAME_ORIGIN))
def test_the_same_origin_spelled_otherwise_is_followed(
    serve: Any, connect: Any, api_for: Any, case: str
) -> None:
    other = serve(answering)
    api_server = serve(redirecting(SAME_ORIGIN[case], other))
    assert api_for(connect(api_server.url))("get_run_status", "run-1")["id"] == "run-1"
    _, second = api_server.requests
    assert second.path == "/v2/runs/run-1" and second.headers["x-api-key"] == KEY
    assert other.requests == []


@pytest.mark.parametrize("strategy", ["poll", "stream"])
@pytest.mark.parametrize("case", ["backslash before @", "IPv6 brackets not an IP", "tab before @"])
def test_the_trigger_ends_at_once_on_a_refused_redirect(
    serve: Any, connect: Any, strategy: str, case: str
) -> None:
    """Not a transient error: the wait does not try again until its deadline."""
    other = serve(answering)
    api_server = serve(redirecting(AMBIGUOUS[case], other))
    started = time.monotonic()
    event = trigger_event(
        connect(api_server.url), wait_strategy=strategy, deadline=time.time() + 120, limit=30
    )
    assert event["status"] == "error"
    assert event["error_type"] == "NoxusRedirectError"
    assert "redirect" in event["message"].lower()
    assert other.requests == []
    assert time.monotonic() - started < 20
    assert len(api_server.requests) <= 2
