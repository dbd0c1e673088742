"""NoxusRunEventTrigger against servers that misbehave (tests/support/hostile_server.py): the key never
leaves the origin, a list that never ends is read a bounded number of pages, garbage in the list is
ignored, ``Retry-After`` is honoured, and the watcher goes on (or waits) instead of crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

if not AIRFLOW_V_3_0_PLUS:
    pytest.skip("event triggers need Airflow 3", allow_module_level=True)

from support.hostile_server import Conn, Request

from airflow_provider_noxus.triggers import run_feed
from airflow_provider_noxus.triggers.events import NoxusRunEventTrigger
from airflow_provider_noxus.triggers.run_feed import active_feeds

KEY = "nxk-hostile-events-Secret-9Zq"
WF = "wf-hostile"


def stamp(offset_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, timezone.utc).isoformat()


def a_run(run_id: str, status: str, created: str) -> dict[str, Any]:
    finished = stamp() if status == "completed" else None
    return {"id": run_id, "workflow_id": WF, "status": status, "created_at": created, "finished_at": finished}


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    extra = {"timeout": 5, "retry_attempts": 3, "max_backoff": 2}
    connection = {"conn_type": "noxus", "host": url, "password": KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))


async def watch(seconds: float, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a watcher for ``seconds``; its events."""
    told: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in NoxusRunEventTrigger(WF, poll_interval=0.2, **kwargs).run():
            told.append(event.payload)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(seconds)
    assert not task.done() or task.exception() is None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert active_feeds() == []
    return told


async def test_a_redirect_to_another_origin_never_gets_the_key(
    serve: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    other = serve(lambda request, conn: conn.reply(200, {"items": [], "total": 0, "page": 1, "pages": 1}))
    api = serve(
        lambda request, conn: conn.reply(307, {"detail": "moved"}, headers={"Location": f"{other.url}/v1/x"})
    )
    point_at(monkeypatch, api.url)
    assert await watch(1.0) == []
    assert other.requests == []
    assert len(api.requests) == 1, "refused at once, then the watcher waits before trying again"
    assert KEY not in caplog.text


async def test_a_list_that_never_ends_is_read_a_bounded_number_of_pages_and_garbage_is_ignored(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_feed, "MAX_PAGES_PER_POLL", 4)
    created = stamp(-3600)
    genuine: list[dict[str, Any]] = [a_run("old", "completed", created)]
    lock = threading.Lock()

    def handler(request: Request, conn: Conn) -> None:
        page = int(request.query.get("page", ["1"])[0])
        garbage = [
            "not a run",
            {"id": 7},
            {"id": "foreign", "workflow_id": "someone-else", "status": "completed", "created_at": stamp()},
            {"id": "undated", "workflow_id": WF, "status": "completed", "created_at": "soon"},
            {
                "id": "far-future",
                "workflow_id": WF,
                "status": "completed",
                "created_at": "2999-01-01T00:00:00Z",
            },
        ]
        with lock:
            items = [*reversed(genuine), *garbage] if page == 1 else garbage
        conn.reply(200, {"items": items, "total": 10**400, "page": page, "size": 100, "pages": 10**9})

    server = serve(handler)
    point_at(monkeypatch, server.url)

    async def add_a_run_later() -> None:
        await asyncio.sleep(0.6)
        with lock:
            genuine.append(a_run("new", "completed", stamp()))

    adding = asyncio.ensure_future(add_a_run_later())
    told = await watch(1.6)
    await adding
    assert [event["run_id"] for event in told] == ["new"]
    polls = 1.6 / 0.2 + 1
    assert len(server.requests) <= 4 * polls, "at most the page budget per poll"


async def test_retry_after_is_honoured_between_two_reads(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def handler(request: Request, conn: Conn) -> None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            conn.reply(429, {"detail": "slow down"}, headers={"Retry-After": "1"})
        else:
            conn.reply(200, {"items": [], "total": 0, "page": 1, "size": 100, "pages": 1})

    point_at(monkeypatch, serve(handler).url)
    await watch(1.6)
    assert len(seen) >= 2
    assert seen[1] - seen[0] >= 0.95
