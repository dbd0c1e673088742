"""A rotated API key: waits in flight go on with the connection's new key, on the worker and in the
triggerer (the trigger's own reads, the shared status watcher's, the event stream), and so does a
wait started while the triggerer's connection cache still holds the old key. The connection is read
again once per refusal, never in a loop; a key that is still refused fails at once.

The connection lives in a stand-in for a secrets backend (a dict, read through the provider's
connection readers), because an ``AIRFLOW_CONN_*`` variable is cached by its value and would hide
the cache's part. The API is a loopback server that accepts one key at a time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from support.hostile_calls import FAST_POLICY, run_body
from support.hostile_server import Conn, HostileServer, Request
from support.noxus_calls import SleepRecorder, within
from support.noxus_tasks import first_event

from airflow_provider_noxus import connection as connection_module
from airflow_provider_noxus.connection import CONNECTION_CACHE
from airflow_provider_noxus.exceptions import NoxusAuthError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

OLD_KEY = "nxk-OLD-0a1b2c3d4e5f"
NEW_KEY = "nxk-NEW-6a7b8c9d0e1f"
CONN_ID = "noxus_rotating"
#: Longest a trigger test may take.
LIMIT_S = 30.0


class SecretsBackend:
    """The connection as a secrets backend serves it; counts the reads."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.password = OLD_KEY
        self.reads = 0
        self._lock = threading.Lock()

    def connection(self, conn_id: str) -> Any:
        assert conn_id == CONN_ID
        with self._lock:
            self.reads += 1
            return SimpleNamespace(
                conn_id=conn_id, host=self.host, port=None, password=self.password, extra_dejson={}
            )


class RotatingApi:
    """The API, accepting one key: ``rotate()`` (called by the test, or by the server itself after
    ``rotate_after`` answered requests) revokes the old key and puts the new one in the backend.
    Runs are ``running`` until ``completed_after`` requests were answered."""

    def __init__(self, rotate_after: int | None, completed_after: int = 3) -> None:
        self.backend: SecretsBackend | None = None
        self.accepted = OLD_KEY
        self.rotate_after = rotate_after
        self.completed_after = completed_after
        self.answered = 0
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def rotate(self, *, in_connection: bool = True) -> None:
        assert self.backend is not None
        if in_connection:
            self.backend.password = NEW_KEY
        self.accepted = NEW_KEY

    def __call__(self, request: Request, conn: Conn) -> None:
        with self._lock:
            if self.rotate_after is not None and self.answered >= self.rotate_after:
                self.rotate_after = None
                self.rotate()
            key = request.headers.get("x-api-key", "")
            if key != self.accepted:
                self.refused.append(key)
                conn.reply(401, {"detail": "Missing or invalid API key"})
                return
            self.answered += 1
            status = "completed" if self.answered > self.completed_after else "running"
        if request.path.endswith("/events"):
            frame = {"type": "state", "data": {"workflow_status": status}, "redisId": "1"}
            body = f"data: {json.dumps(frame)}\n\n".encode()
            conn.reply(200, body, headers={"Content-Type": "text/event-stream"})
        elif request.path == "/v1/workflows/wf-1/runs":
            items = [run_body(status, f"run-{n}") for n in range(1, 4)]
            conn.reply(200, {"items": items, "total": 3, "page": 1, "size": 100, "pages": 1})
        else:
            conn.reply(200, run_body(status, request.path.rsplit("/", 1)[-1]))


@pytest.fixture
def rotating(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``rotating(rotate_after)``: (API server, its script, the backend), the provider's connection
    readers pointed at the backend."""
    CONNECTION_CACHE.forget()
    servers: list[HostileServer] = []

    def start(rotate_after: int | None, completed_after: int = 3) -> tuple[HostileServer, RotatingApi]:
        api = RotatingApi(rotate_after, completed_after)
        server = HostileServer(api).__enter__()
        servers.append(server)
        api.backend = backend = SecretsBackend(server.url)

        async def aget_connection(conn_id: str) -> Any:
            await asyncio.sleep(0.05)  # a secrets backend answers after a while: others are refused meanwhile
            return backend.connection(conn_id)

        monkeypatch.setattr(connection_module, "aget_connection", aget_connection)
        read = classmethod(lambda cls, conn_id: backend.connection(conn_id))
        monkeypatch.setattr(NoxusHook, "get_connection", read)
        return server, api

    yield start
    CONNECTION_CACHE.forget()
    for server in servers:
        server.stop()
        assert not server.errors


def make_hook() -> NoxusHook:
    sleeps = SleepRecorder()
    return NoxusHook(CONN_ID, retry_policy=FAST_POLICY, sleep=sleeps, async_sleep=sleeps.asleep)


def trigger(run_id: str, strategy: str = "poll") -> NoxusRunTrigger:
    return NoxusRunTrigger(CONN_ID, "wf-1", run_id, poll_interval=0.1, wait_strategy=strategy)


# ---- the worker -----------------------------------------------------------------------------------


def test_a_blocking_wait_goes_on_with_the_rotated_key(rotating: Any) -> None:
    server, api = rotating(rotate_after=2)
    hook = make_hook()
    run = within(LIMIT_S, hook.wait_for_run, "wf-1", "run-1", strategy="poll", poll_interval=0.05)
    assert run["status"] == "completed"
    assert api.refused == [OLD_KEY], "one refusal, then the new key"
    assert api.backend.reads == 2, "read at start, and once after the refusal"
    assert server.requests[-1].headers["x-api-key"] == NEW_KEY
    assert hook.get_run_status("run-2")["id"] == "run-2"  # the hook goes on with the new key
    assert api.refused == [OLD_KEY] and api.backend.reads == 2


def test_a_still_refused_key_fails_after_one_read(rotating: Any) -> None:
    server, api = rotating(rotate_after=None)
    api.rotate(in_connection=False)  # the key is revoked, the connection not changed
    with pytest.raises(NoxusAuthError):
        within(LIMIT_S, make_hook().get_run_status, "run-1")
    assert api.refused == [OLD_KEY]
    assert api.backend.reads == 2
    assert len(server.requests) == 1


def test_a_new_key_for_another_host_is_not_sent_to_the_old_one(rotating: Any) -> None:
    server, api = rotating(rotate_after=None)
    hook = make_hook()
    assert hook.settings.api_key == OLD_KEY  # read before the connection moves
    api.rotate()
    api.backend.host = "http://127.0.0.1:9"  # the connection moved: its new key is for another host
    with pytest.raises(NoxusAuthError):
        within(LIMIT_S, hook.get_run_status, "run-1")
    assert [request.headers["x-api-key"] for request in server.requests] == [OLD_KEY]


# ---- the triggerer --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["poll", "stream"])
async def test_a_trigger_goes_on_with_the_rotated_key(rotating: Any, strategy: str) -> None:
    _, api = rotating(rotate_after=1)
    event = await asyncio.wait_for(first_event(trigger("run-1", strategy)), LIMIT_S)
    assert event["status"] == "success", event
    assert api.refused == [OLD_KEY]
    assert api.backend.reads == 2


async def test_triggers_sharing_a_watcher_and_those_started_later_use_the_rotated_key(
    rotating: Any,
) -> None:
    server, api = rotating(rotate_after=2, completed_after=6)
    started = time.monotonic()
    events = await asyncio.wait_for(
        asyncio.gather(*(first_event(trigger(f"run-{n}")) for n in range(1, 4))), LIMIT_S
    )
    assert [event["status"] for event in events] == ["success"] * 3, events
    assert any(request.path == "/v1/workflows/wf-1/runs" for request in server.requests), "the watcher read"
    assert 1 <= len(api.refused) <= 3 and set(api.refused) == {OLD_KEY}
    assert api.backend.reads == 2, "one read at start, one after the refusals: shared"
    # Within the cache's TTL, a new trigger gets the new key at once: no refusal, no read.
    refused = len(api.refused)
    event = await asyncio.wait_for(first_event(trigger("run-1")), LIMIT_S)
    assert event["status"] == "success"
    assert len(api.refused) == refused and api.backend.reads == 2
    assert time.monotonic() - started < LIMIT_S


async def test_requests_refused_together_go_on_after_one_read(rotating: Any) -> None:
    _, api = rotating(rotate_after=None)
    async with make_hook().async_client() as client:
        api.rotate()
        reads = [client.a_get_run_status(f"run-{n}") for n in range(1, 6)]
        runs = await asyncio.wait_for(asyncio.gather(*reads), LIMIT_S)
    assert [run["id"] for run in runs] == [f"run-{n}" for n in range(1, 6)]
    assert api.refused == [OLD_KEY] * 5
    assert api.backend.reads == 2


async def test_a_trigger_with_a_still_refused_key_fails_after_one_read(rotating: Any) -> None:
    _, api = rotating(rotate_after=None)
    api.rotate(in_connection=False)
    event = await asyncio.wait_for(first_event(trigger("run-1")), LIMIT_S)
    assert event["status"] == "error" and event["error_type"] == "NoxusAuthError"
    assert api.refused == [OLD_KEY]
    assert api.backend.reads == 2
