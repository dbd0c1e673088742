"""The sync deadline and the connection pool: once an answer is read whole, its connection goes back to
the pool, possibly to another thread's request at once; the first request's deadline, passing later,
must neither cut that request nor call the complete answer a timeout."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.hostile_calls import run_body
from support.hostile_server import Conn, Request

#: The connection's timeout: each request's total deadline. run-a's deadline passes at 2 s; run-b
#: starts at 1 s and is answered at 2.5 s, within its own deadline (3 s).
TIMEOUT_S = 2.0
RUN_B_STARTS_S = 1.0
RUN_B_ANSWER_S = 1.5
#: Bound of each call of the test.
LIMIT_S = 20.0


def slow_for_run_b(request: Request, conn: Conn) -> None:
    """run-a is answered at once; run-b past run-a's deadline."""
    if request.path.endswith("/run-b"):
        conn.pause(RUN_B_ANSWER_S)
    conn.reply(200, run_body("running", request.path.rsplit("/", 1)[-1]))


@pytest.fixture
def pause_after_first_body(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The first answer read whole (its connection back in the pool), its thread stops until its
    deadline has passed, as a thread descheduled there would; the event is set when it stops."""
    stopped = threading.Event()
    original = requests.models.Response.iter_content

    def iter_content(self: requests.Response, *args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from original(self, *args, **kwargs)
        if not stopped.is_set():
            stopped.set()
            threading.Event().wait(TIMEOUT_S + 0.6)

    monkeypatch.setattr(requests.models.Response, "iter_content", iter_content)
    return stopped


def test_a_deadline_that_passes_after_the_answer_cuts_nothing(
    serve: Any, connect: Any, sleeps: Any, pause_after_first_body: threading.Event
) -> None:
    api_server = serve(slow_for_run_b)
    hook = connect(api_server.url, timeout=TIMEOUT_S)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(hook.get_run_status, "run-a")
        assert pause_after_first_body.wait(LIMIT_S)
        # run-a's connection is back in the pool: run-b takes it, while run-a's deadline is running.
        threading.Event().wait(RUN_B_STARTS_S)
        second = pool.submit(hook.get_run_status, "run-b")
        assert second.result(timeout=LIMIT_S)["id"] == "run-b"
        assert first.result(timeout=LIMIT_S)["id"] == "run-a", "a complete answer is not a timeout"
    assert sleeps.waits == [], "run-b was not cut and tried again"
    assert [request.path for request in api_server.requests] == ["/v1/runs/run-a", "/v1/runs/run-b"]
