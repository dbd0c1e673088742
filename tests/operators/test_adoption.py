"""Adopting the run of a create whose answer was lost: only a run that can only be this task's, and
never stopping it (issue 23). Each scenario of the issue, over real HTTP: against the emulator (its
counters are the proof) or a scripted loopback server (for runs the emulator cannot make: created
minutes before, or stamped without a zone).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.hostile_server import Conn, HostileServer, Request
from support.noxus_tasks import (
    DictStateStore,
    FakeTaskInstance,
    defer_only,
    first_event,
    make_context,
    run_task,
    use_fast_connection,
)
from support.noxus_tasks import make_operator as operator

from airflow_provider_noxus._compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_noxus.exceptions import NoxusRunError, NoxusRunTimeoutError
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.run_identity import RUN_RECORD_KEY, fingerprint, intent_fingerprint

needs_store = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")
KEY = "nx-adoption-key"
PROXY_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def created(emu: Any) -> int:
    return int(emu.control.counters()["runs_created_total"])


def stops(emu: Any) -> dict[str, int]:
    return dict(emu.control.counters()["stops"])


def context(store: DictStateStore | None = None, try_number: int = 1) -> dict[str, Any]:
    return make_context(FakeTaskInstance(try_number=try_number, max_tries=3), store)


def stamp(epoch: float, zone: str = "Z") -> str:
    """``epoch`` as the API's ISO 8601 text; ``zone=""`` leaves the zone out."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}{zone}"


# ---- a scripted Noxus: a create answered by a proxy's 502, and a run list the test writes ---------


class ScriptedNoxus:
    """A loopback Noxus whose create answers a proxy's 502 and whose run list is ``runs(t_send)``.

    :param runs: the listed runs, from the time the create arrived (server clock = worker clock).
    :param create_delay: seconds the create is held before the 502 (a slow upstream).
    """

    def __init__(self, runs: Callable[[float], list[dict[str, Any]]], create_delay: float = 0.0) -> None:
        self.runs = runs
        self.create_delay = create_delay
        self.creates: list[float] = []
        self.stops: list[str] = []

    def listed(self) -> list[dict[str, Any]]:
        return self.runs(self.creates[0]) if self.creates else []

    def __call__(self, request: Request, conn: Conn) -> None:
        if request.method == "POST" and request.path == "/v1/workflows/wf-1/runs":
            self.creates.append(time.time())
            conn.pause(self.create_delay)
            conn.reply(502, PROXY_502, {"Content-Type": "text/html"})
        elif request.method == "POST" and request.path.endswith("/stop"):
            self.stops.append(request.path.split("/")[3])
            conn.reply(200, {"id": request.path.split("/")[3], "status": "stopped"})
        elif request.path == "/v1/workflows/wf-1/runs":
            items = self.listed()
            conn.reply(200, {"items": items, "total": len(items), "page": 1, "size": 100, "pages": 1})
        else:
            run_id = request.path.rsplit("/", 1)[-1]
            run = next((run for run in self.listed() if run["id"] == run_id), None)
            conn.reply(200, run) if run else conn.reply(404, {"detail": "Run not found"})


def a_run(run_id: str, created_at: str, text: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": run_id,
        "workflow_id": "wf-1",
        "workflow_version_id": None,
        "status": "completed",
        "created_at": created_at,
        "finished_at": created_at,
        "input": {"q": 1} if inputs is None else inputs,
        "output": {"answer": text},
        "progress": 100,
    }


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ScriptedNoxus]]:
    servers: list[HostileServer] = []

    def start(runs: Callable[[float], list[dict[str, Any]]], create_delay: float = 0.0) -> ScriptedNoxus:
        noxus = ScriptedNoxus(runs, create_delay)
        server = HostileServer(noxus).__enter__()
        servers.append(server)
        use_fast_connection(monkeypatch, server, api_key=KEY)
        return noxus

    yield start
    for server in servers:
        server.stop()


def scripted_task(inputs: dict[str, Any] | None = None) -> NoxusRunOperator:
    inputs = {"q": 1} if inputs is None else inputs
    return NoxusRunOperator(task_id="t", workflow_id="wf-1", inputs=inputs, poll_interval=0.05)


# ---- which run is adopted ----------------------------------------------------------------------------


def test_a_proxy_502_that_made_no_run_does_not_adopt_a_colleagues_run_from_4_minutes_before(
    scripted: Callable[..., ScriptedNoxus],
) -> None:
    noxus = scripted(lambda sent: [a_run("colleague", stamp(sent - 240), "colleague's")])
    with pytest.raises(NoxusRunError, match="no run made by it was found"):
        scripted_task().execute(context())
    assert len(noxus.creates) == 1, "the create is never sent twice"
    assert noxus.stops == []


def test_another_tasks_identical_run_made_just_after_the_send_is_not_adopted_in_place_of_its_own(
    scripted: Callable[..., ScriptedNoxus],
) -> None:
    # The upstream made this task's run 0.6 s after the send (then the proxy answered 502); another
    # DAG's identical run was made 0.2 s after the send: two candidates, nothing to tell them apart.
    noxus = scripted(
        lambda sent: [
            a_run("own", stamp(sent + 0.6), "own"),
            a_run("other-dag", stamp(sent + 0.2), "other's"),
        ],
        create_delay=0.6,
    )
    with pytest.raises(NoxusRunError, match="cannot tell which one") as raised:
        scripted_task().execute(context())
    assert "own" in str(raised.value) and "other-dag" in str(raised.value), "the message names both runs"
    assert "looks for it again" not in str(raised.value), "a later try would fail the same way"
    assert len(noxus.creates) == 1, "no third run either"
    assert noxus.stops == []


@pytest.mark.parametrize(
    ("zone", "runs", "adopted"),
    [
        # East of UTC a zone-less stamp read as local time puts the task's own run hours in the past.
        ("Asia/Tokyo", lambda sent: [a_run("own", stamp(sent + 0.05, ""), "own")], True),
        # West of UTC a zone-less run from 7 hours ago looks as if made now.
        ("Etc/GMT+7", lambda sent: [a_run("old", stamp(sent - 7 * 3600, ""), "7 hours old")], False),
    ],
    ids=["east-own-run-found", "west-old-run-not-adopted"],
)
def test_zone_less_created_at_is_utc_whatever_the_workers_zone(
    scripted: Callable[..., ScriptedNoxus],
    monkeypatch: pytest.MonkeyPatch,
    zone: str,
    runs: Callable[[float], list[dict[str, Any]]],
    adopted: bool,
) -> None:
    noxus = scripted(runs)
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        if adopted:
            assert run_task(scripted_task(), context()) == {"answer": "own"}
        else:
            with pytest.raises(NoxusRunError, match="no run made by it was found"):
                scripted_task().execute(context())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert len(noxus.creates) == 1
    assert noxus.stops == []


def test_a_workflow_without_inputs_does_not_adopt_any_earlier_run(
    scripted: Callable[..., ScriptedNoxus],
) -> None:
    noxus = scripted(lambda sent: [a_run("earlier", stamp(sent - 60), "a minute old", inputs={})])
    with pytest.raises(NoxusRunError, match="no run made by it was found"):
        scripted_task(inputs={}).execute(context())
    assert len(noxus.creates) == 1
    assert noxus.stops == []


@needs_store
def test_a_run_made_an_hour_after_a_lost_create_is_not_adopted_by_the_next_try(emu: Any) -> None:
    task = operator(emu, "echo", {"text": "hourly"})
    store = DictStateStore()
    options: dict[str, Any] = {
        "workflow_version_id": None, "node_ids": None, "callback_url": None, "use_sync_endpoint": False
    }
    # Try 1 sent its create an hour ago and lost the answer (the run list never showed a run of it).
    store.values[RUN_RECORD_KEY] = {
        "version": 2,
        "workflow_id": task.workflow_id,
        "intent": intent_fingerprint(task.workflow_id, {"text": "hourly"}, **options),
        "sent_at": time.time() - 3600,
        "input_fingerprint": fingerprint({"text": "hourly"}),
        "max_tries": 3,
    }
    someone = task.hook.create_run(task.workflow_id, {"text": "hourly"})  # an hour later, someone else's
    retry = context(store, try_number=2)
    assert run_task(operator(emu, "echo", {"text": "hourly"}), retry) == {"text": "hourly"}
    assert retry["ti"].xcom["run_id"] != someone["id"]
    assert created(emu) == 2
    assert stops(emu) == {}


def test_a_503_with_retry_after_is_not_sent_again(emu: Any) -> None:
    # The API reference does not say a 503 comes before the create is handled: it may hide a run.
    emu.control.add_fault("create_run", "status", status=503, retry_after=1)
    with pytest.raises(NoxusRunError, match="no run made by it was found"):
        operator(emu, "echo", {"text": "busy"}).execute(context())
    assert emu.control.counters()["requests"]["create_run"] == {"503": 1}
    assert created(emu) == 0


# ---- an adopted run is never stopped by the task ---------------------------------------------------


def adopt_slow_run(emu: Any, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> NoxusRunOperator:
    use_fast_connection(monkeypatch, emu)
    emu.control.add_fault("create_run", "lose_answer", mode="502")
    return operator(emu, "slow", {"seconds": 30}, **kwargs)  # type: ignore[no-any-return]


def test_an_adopted_run_is_not_stopped_at_the_timeout(emu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    task = adopt_slow_run(emu, monkeypatch, deferrable=False, timeout=1)
    with pytest.raises(NoxusRunTimeoutError, match="left running"):
        task.execute(context())
    assert created(emu) == 1
    assert stops(emu) == {}


@needs_store
def test_an_adopted_run_is_not_stopped_at_the_timeout_after_deferring(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DictStateStore()
    task = adopt_slow_run(emu, monkeypatch, timeout=1)
    deferred = defer_only(task, context(store))
    event = asyncio.run(asyncio.wait_for(first_event(deferred.trigger), timeout=30))
    resumed = operator(emu, "slow", {"seconds": 30}, timeout=1)  # Airflow resumes on a new object
    with pytest.raises(NoxusRunTimeoutError, match="left running"):
        getattr(resumed, deferred.method_name)(context(store), event=event)
    assert created(emu) == 1
    assert stops(emu) == {}


def test_an_adopted_run_is_not_stopped_when_the_task_is_killed(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kill comes from another thread, as from Airflow's SIGTERM handler, once the run is adopted.
    task = adopt_slow_run(emu, monkeypatch, deferrable=False, timeout=8)
    killed: list[str | None] = []

    def kill_once_adopted() -> None:
        deadline = time.monotonic() + 20
        while task._active_run_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.append(task._active_run_id)
        task.on_kill()

    killer = threading.Thread(target=kill_once_adopted)
    killer.start()
    try:
        with pytest.raises(NoxusRunTimeoutError, match="left running"):
            task.execute(context())
    finally:
        killer.join(timeout=30)
    assert killed and killed[0] is not None, "the lost create's run was adopted, then the task killed"
    assert created(emu) == 1
    assert stops(emu) == {}


def test_a_sync_create_answered_without_a_run_id_names_the_sync_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def handler(request: Request, conn: Conn) -> None:
        if request.method == "POST":
            conn.reply(200, {"status": "completed", "output": {}})  # a run was made, but which?
        else:
            conn.reply(200, {"items": [], "total": 0, "page": 1, "size": 100, "pages": 0})

    with HostileServer(handler) as server:
        connection = {"conn_type": "noxus", "host": server.url, "password": KEY, "extra": {"timeout": 10}}
        monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))
        task = NoxusRunOperator(task_id="t", workflow_id="wf-1", inputs={"q": 1}, use_sync_endpoint=True)
        with pytest.raises(NoxusRunError, match="no run made by it was found") as raised:
            task.execute(context())
    assert "POST /v1/workflows/wf-1/runs/sync" in str(raised.value.__cause__)
    assert [request.method for request in server.requests].count("POST") == 1
