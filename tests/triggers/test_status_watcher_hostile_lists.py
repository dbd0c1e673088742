"""The shared status watcher against run lists no honest server sends (scripted loopback servers): a
busy list that grows between page reads, a list that ignores ``page``, items without a status or of
another workflow, counts too large for a float, a run read answered with something else than a run.
Each round stays bounded, and a bad value fails at most the run it concerns.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.hostile_calls import KEY
from support.hostile_server import Conn, HostileServer, Request
from support.noxus_tasks import FAST_RETRY_EXTRAS
from support.watched_triggers import waiting

from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger
from airflow_provider_noxus.triggers.status_watcher import StatusWatchers

WORKFLOW = "wf-1"
INTERVAL_S = 0.2
#: ``list_page(page asked, list requests so far)``: the list envelope to answer.
ListPage = Callable[[int, int], Any]
#: ``run_answer(run id, reads of that run so far)``: the body of ``GET /v1/runs/{id}``.
RunAnswer = Callable[[str, int], Any]


class ScriptedNoxus:
    """A Noxus API of one workflow whose run list and run reads a test scripts; counts what it answers.

    :param list_page: the list's answers.
    :param run_answer: the run reads' answers.
    :param run_delay: seconds a run read waits before it answers, by run id.
    """

    def __init__(
        self, list_page: ListPage, run_answer: RunAnswer, run_delay: dict[str, float] | None = None
    ) -> None:
        self.list_page = list_page
        self.run_answer = run_answer
        self.run_delay = run_delay or {}
        self.list_reads = 0
        self.run_reads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Request, conn: Conn) -> None:
        if request.path == f"/v1/workflows/{WORKFLOW}/runs":
            with self._lock:
                self.list_reads += 1
                reads = self.list_reads
            conn.reply(200, self.list_page(int(request.query.get("page", ["1"])[0]), reads))
        elif request.path.startswith("/v1/runs/"):
            run_id = request.path.rsplit("/", 1)[1]
            with self._lock:
                self.run_reads[run_id] += 1
                reads = self.run_reads[run_id]
            if conn.pause(self.run_delay.get(run_id, 0.0)):
                return
            conn.reply(200, self.run_answer(run_id, reads))
        else:
            conn.reply(404, {"detail": "not scripted"})


@pytest.fixture
def use_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[ScriptedNoxus], HostileServer]]:
    """``use_server(api)``: ``api`` served on 127.0.0.1, the ``noxus_default`` connection pointed at it."""
    servers: list[HostileServer] = []

    def start(api: ScriptedNoxus) -> HostileServer:
        server = HostileServer(api).__enter__()
        servers.append(server)
        connection = {"conn_type": "noxus", "host": server.url, "password": KEY, "extra": FAST_RETRY_EXTRAS}
        monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))
        return server

    yield start
    for server in servers:
        server.stop()
        assert not server.errors, f"the scripted server failed: {server.errors!r}"


def run(run_id: str, status: str = "running", workflow_id: str = WORKFLOW) -> dict[str, Any]:
    return {"id": run_id, "workflow_id": workflow_id, "status": status}


def history(newest: int, page: int, count: int = 100) -> list[dict[str, Any]]:
    """Page ``page`` of a list of older runs whose newest is ``old-{newest}`` (the waited ones not in it)."""
    first = newest - (page - 1) * count
    return [run(f"old-{number}", "completed") for number in range(first, max(first - count, 0), -1)]


def trigger(run_id: str) -> NoxusRunTrigger:
    return NoxusRunTrigger("noxus_default", WORKFLOW, run_id, poll_interval=INTERVAL_S, wait_strategy="poll")


async def rounds_against(
    api: ScriptedNoxus, run_ids: list[str], seconds: float = 2.0
) -> tuple[int, int, int]:
    """Triggers waiting on ``run_ids`` for ``seconds``: the watcher's rounds, ``api``'s list reads and run
    reads meanwhile."""
    async with waiting(trigger(run_id) for run_id in run_ids):
        await asyncio.sleep(seconds)
        [watcher] = StatusWatchers.active()
        return watcher.rounds, api.list_reads, sum(api.run_reads.values())


async def test_a_busy_list_bounds_the_pages_of_a_round(use_server: Any) -> None:
    # 20,000 older runs, three more created between any two page reads; the runs waited on are not in
    # the list (a sensor pointed at the wrong workflow reads the same).
    def busy(page: int, reads: int) -> dict[str, Any]:
        total = 20_000 + 3 * reads
        return {
            "items": history(total, page),
            "total": total,
            "page": page,
            "size": 100,
            "pages": -(-total // 100),
        }

    api = ScriptedNoxus(busy, lambda run_id, _: run(run_id))
    use_server(api)
    rounds, list_reads, run_reads = await rounds_against(api, ["run-1", "run-2"])
    assert rounds >= 3
    # Two due runs: a budget of two pages, one more for the runs created meanwhile (counted once).
    assert list_reads <= 3 * (rounds + 1), (list_reads, rounds)
    assert run_reads >= 2 * rounds, "the runs not in the pages read are read one by one"


async def test_a_list_that_ignores_page_ends_the_round_at_the_first_repeat(use_server: Any) -> None:
    # Always the newest runs whatever page is asked, no ``pages`` nor ``page``; a run created per read.
    def stuck(_page: int, reads: int) -> dict[str, Any]:
        return {"items": history(5_000 + reads, 1), "total": 5_000 + reads}

    api = ScriptedNoxus(stuck, lambda run_id, _: run(run_id))
    use_server(api)
    rounds, list_reads, run_reads = await rounds_against(api, ["run-1", "run-2"])
    assert rounds >= 3
    assert list_reads <= 2 * (rounds + 1), (list_reads, rounds)  # the first page, and its repeat
    assert run_reads >= 2 * rounds


async def test_list_items_without_a_status_or_of_another_workflow_are_not_seen(use_server: Any) -> None:
    def listed(_page: int, _reads: int) -> dict[str, Any]:
        items = [{"id": "run-1", "workflow_id": WORKFLOW}, run("run-2", workflow_id="wf-other"), run("run-3")]
        return {"items": items, "total": 3, "page": 1, "size": 100, "pages": 1}

    api = ScriptedNoxus(
        listed, lambda run_id, _: run(run_id, "running" if run_id == "run-3" else "completed")
    )
    use_server(api)
    async with waiting(trigger(run_id) for run_id in ["run-1", "run-2", "run-3"]) as waits:
        events = await asyncio.wait_for(asyncio.gather(*waits[:2]), 10)
        assert [(event["run_id"], event["status"]) for event in events] == [
            ("run-1", "success"),
            ("run-2", "success"),
        ]
        assert not waits[2].done()
    assert api.run_reads["run-1"] >= 1 and api.run_reads["run-2"] >= 1
    assert api.run_reads["run-3"] == 0, "a run seen in the list is not read on its own"


async def test_a_count_too_large_for_a_float_fails_no_trigger(use_server: Any) -> None:
    def huge(page: int, _reads: int) -> dict[str, Any]:
        total = 500 if page == 1 else 10**400
        return {"items": history(500, page), "total": total, "page": page, "size": 100, "pages": 5}

    api = ScriptedNoxus(huge, lambda run_id, _: run(run_id, "completed"))
    use_server(api)
    runs = ["run-1", "run-2", "run-3"]
    async with waiting(trigger(run_id) for run_id in runs) as waits:
        events = await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert [event["status"] for event in events] == ["success"] * 3
    assert api.list_reads >= 2, "the page with the huge count was read"


async def test_a_run_read_answered_with_another_run_is_not_taken_for_it(use_server: Any) -> None:
    def empty(_page: int, _reads: int) -> dict[str, Any]:
        return {"items": [], "total": 0, "page": 1, "size": 100, "pages": 0}

    def answer(run_id: str, reads: int) -> Any:
        if run_id == "run-2":  # first another run's body (a stale cache, say), then its own: failed
            return run("run-9", "completed") if reads == 1 else run("run-2", "failed")
        return run(run_id, "completed")

    api = ScriptedNoxus(empty, answer)
    use_server(api)
    async with waiting(trigger(run_id) for run_id in ["run-1", "run-2", "run-3"]) as waits:
        events = await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert [event["status"] for event in events] == ["success", "failed", "success"]
    assert api.run_reads["run-2"] == 2, "the wrong answer was run-2's failed read alone, read again"
    assert api.run_reads["run-1"] == api.run_reads["run-3"] == 1
