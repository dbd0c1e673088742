"""NoxusRunEventTrigger (triggers/events.py) against the emulator over HTTP: one event per run that ends
after the watcher started, whoever made the run; none for history; none lost or repeated across a
restart from the stored state; one shared poll; only the new head of a long list read per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.noxus_tasks import use_fast_connection

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

if not AIRFLOW_V_3_0_PLUS:
    pytest.skip("event triggers need Airflow 3 (see test_event_trigger_airflow2.py)", allow_module_level=True)

from airflow_provider_noxus.emulator import EmulatorServer
from airflow_provider_noxus.hooks._transport import SHARED_SESSIONS
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.events import STATE_KEY, NoxusRunEventTrigger
from airflow_provider_noxus.triggers.run_feed import active_feeds

POLL = 0.3


@pytest.fixture
def emu(noxus_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    use_fast_connection(monkeypatch, noxus_emulator)
    return noxus_emulator


class MemoryStateStore:
    """Stand-in for Airflow's asset state store accessor (the real one talks to the triggerer's
    supervisor): values go through JSON, as they do in the database."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.dumps(value)
        self.writes += 1


class Watcher:
    """A trigger's ``run()`` in a task, its events collected in order."""

    def __init__(self, trigger: NoxusRunEventTrigger) -> None:
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(self._collect())

    async def _collect(self) -> None:
        async for event in self.trigger.run():
            self.events.append(event.payload)

    def run_ids(self) -> list[str]:
        return [event["run_id"] for event in self.events]

    async def until(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if self.task.done():
                self.task.result()
            assert time.monotonic() < deadline, f"{len(self.events)} of {count} events after {timeout} s"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def watching(
    workflow_id: str, store: MemoryStateStore | None = None, **kwargs: Any
) -> AsyncIterator[Watcher]:
    kwargs.setdefault("poll_interval", POLL)
    trigger = NoxusRunEventTrigger(workflow_id, **kwargs)
    trigger.asset_state_store = store
    watcher = Watcher(trigger)
    try:
        yield watcher
    finally:
        await watcher.stop()


def create(emu: EmulatorServer, seconds: float, workflow: str = "slow") -> str:
    """A run of the built-in ``slow`` workflow lasting ``seconds``, or of ``fail`` (about 0.3 s)."""
    inputs = {"seconds": seconds} if workflow == "slow" else {}
    return NoxusHook().create_run(emu.control.workflow_id(workflow), inputs)["id"]


def ended(emu: EmulatorServer, run_id: str) -> bool:
    return emu.control.run(run_id)["status"] in ("completed", "failed", "stopped")


async def until_ended(emu: EmulatorServer, run_ids: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not all(ended(emu, run_id) for run_id in run_ids):
        assert time.monotonic() < deadline, "runs did not end"
        await asyncio.sleep(0.05)


def requests(emu: EmulatorServer, endpoint: str) -> int:
    return sum(emu.control.counters()["requests"].get(endpoint, {}).values())


async def until_polled(polls: int, timeout: float = 20) -> None:
    """Until every feed has done ``polls`` more polls (a feed not made yet: ``polls`` in all)."""
    deadline = time.monotonic() + timeout
    while not active_feeds():
        assert time.monotonic() < deadline, "no watcher joined a feed"
        await asyncio.sleep(0.01)
    start = {id(feed): feed.polls for feed in active_feeds()}
    while any(feed.polls < start.get(id(feed), 0) + polls for feed in active_feeds()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def assert_nothing_left() -> None:
    assert active_feeds() == []
    assert SHARED_SESSIONS.pools() == {}
    assert [task for task in asyncio.all_tasks() if task.get_name().startswith("noxus-run-feed")] == []


async def test_one_event_per_run_ended_after_start_none_for_history(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    history = [create(emu, 0) for _ in range(3)]
    in_flight_at_start = create(emu, 2.0)
    await until_ended(emu, history)
    async with watching(workflow_id) as watcher:
        await until_polled(1)
        new = [create(emu, 0.2), create(emu, 0.5)]
        await watcher.until(3)
        await until_polled(3)  # and nothing more comes
        assert sorted(watcher.run_ids()) == sorted([in_flight_at_start, *new])
        event = next(event for event in watcher.events if event["run_id"] == in_flight_at_start)
        assert event["workflow_id"] == workflow_id
        assert event["status"] == "completed"
        assert event["finished_at"].endswith("+00:00")
        assert event["run_url"].endswith(in_flight_at_start)
        assert set(event) == {"run_id", "workflow_id", "status", "finished_at", "run_url"}
    assert_nothing_left()


async def test_only_the_watched_statuses_make_events(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("fail")
    async with (
        watching(workflow_id, statuses=("failed",)) as failed,
        watching(workflow_id, statuses=("completed",)) as completed,
    ):
        await until_polled(1)
        runs = [create(emu, 0, "fail") for _ in range(2)]
        await failed.until(2)
        await until_polled(2)
        assert sorted(failed.run_ids()) == sorted(runs)
        assert {event["status"] for event in failed.events} == {"failed"}
        assert completed.events == []


async def test_a_restart_from_the_stored_state_repeats_nothing_and_loses_nothing(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    store = MemoryStateStore()
    async with watching(workflow_id, store) as first:
        await until_polled(1)
        told = [create(emu, 0)]
        long_run = create(emu, 3.0)  # in flight when the watcher goes away, ends while it is away
        await first.until(1)
        await until_polled(1)
    assert first.run_ids() == told
    assert store.values[STATE_KEY]
    while_down = [create(emu, 0), create(emu, 0.2)]
    await until_ended(emu, [*while_down, long_run])
    async with watching(workflow_id, store) as second:
        await second.until(3)
        after = [create(emu, 0.1)]
        await second.until(4)
        await until_polled(3)
        assert sorted(second.run_ids()) == sorted([long_run, *while_down, *after])
    assert_nothing_left()


async def test_without_a_state_store_a_restart_starts_afresh_and_repeats_nothing(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    async with watching(workflow_id) as first:
        await until_polled(1)
        told = create(emu, 0)
        await first.until(1)
    await until_ended(emu, [create(emu, 0)])  # ends while nobody watches: history to the next watcher
    async with watching(workflow_id) as second:
        await until_polled(1)
        later = create(emu, 0)
        await second.until(1)
        await until_polled(2)
    assert first.run_ids() == [told]
    assert second.run_ids() == [later]


async def test_watchers_of_one_workflow_share_one_poll_at_their_shortest_interval(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    async with (
        watching(workflow_id) as one,
        watching(workflow_id) as two,
        watching(workflow_id, statuses=("completed", "failed"), poll_interval=60) as three,
    ):
        await until_polled(1)
        assert len(active_feeds()) == 1
        run = create(emu, 0)
        for watcher in (one, two, three):
            await watcher.until(1)
        before, feed = requests(emu, "list_runs"), active_feeds()[0]
        polls = feed.polls
        await until_polled(5)
        assert requests(emu, "list_runs") - before <= feed.polls - polls, "one list page per shared poll"
        assert [w.run_ids() for w in (one, two, three)] == [[run]] * 3
        assert feed.polls - polls >= 5, "the 60 s watcher did not slow the shared poll down"
    assert_nothing_left()


async def test_a_long_history_is_read_once_then_only_the_new_head(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    old_in_flight = create(emu, 6.0)
    history = [create(emu, 0) for _ in range(450)]  # five pages of 100 above the run in flight
    await until_ended(emu, history[-5:])
    async with watching(workflow_id) as watcher:
        await until_polled(1)
        first_poll = requests(emu, "list_runs")
        assert first_poll == 5, "the first poll reads the whole list once, to find the runs in flight"
        new = [create(emu, 0) for _ in range(3)]
        await watcher.until(4, timeout=30)
        before, polls = requests(emu, "list_runs"), active_feeds()[0].polls
        await until_polled(4)
        per_poll = (requests(emu, "list_runs") - before) / (active_feeds()[0].polls - polls)
        assert per_poll == 1, "a poll reads the head only"
        assert sorted(watcher.run_ids()) == sorted([old_in_flight, *new])
        # The old run was in flight deep in the list: it was read by itself, not by paging down to it.
        assert requests(emu, "get_run_status") >= 1


async def test_a_fan_out_in_flight_below_newer_runs_is_read_by_pages_not_run_by_run(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    fan_out = [create(emu, 8.0) for _ in range(250)]  # made elsewhere, in flight when the watcher starts
    async with watching(workflow_id) as watcher:
        await until_polled(1)
        newer = [create(emu, 0) for _ in range(150)]  # push the fan-out down to pages 2-4
        await watcher.until(400, timeout=60)
        assert sorted(watcher.run_ids()) == sorted([*fan_out, *newer])
        polls = active_feeds()[0].polls
    reads = requests(emu, "get_run_status")
    # Run by run, each poll would read up to 250 runs; pages below the head cover them in a few requests.
    assert reads < 50, (reads, polls)
    assert requests(emu, "list_runs") <= 4 + polls * 6


async def test_transient_failures_and_retry_after_lose_and_repeat_nothing(emu: Any) -> None:
    workflow_id = emu.control.workflow_id("slow")
    async with watching(workflow_id) as watcher:
        await until_polled(1)
        emu.control.add_fault("list_runs", "status", status=503, count=4, retry_after=0.2)
        emu.control.add_fault("list_runs", "malformed", count=2)
        runs = [create(emu, 0) for _ in range(3)]
        await watcher.until(3, timeout=30)
        await until_polled(3)
        assert sorted(watcher.run_ids()) == sorted(runs)
        assert emu.control.faults() == []


async def test_a_refused_key_is_logged_and_retried_later_not_in_a_storm(
    emu: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    connection = {"conn_type": "noxus", "host": emu.url, "password": "nxk-wrong-key-for-the-test"}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))
    async with watching(emu.control.workflow_id("slow")) as watcher:
        await asyncio.sleep(1.5)
        assert not watcher.task.done()
        assert requests(emu, "list_runs") == 1
    assert "nxk-wrong-key-for-the-test" not in caplog.text
    assert_nothing_left()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workflow_id": ""}, "needs the workflow_id"),
        ({"workflow_id": "w", "statuses": ("running",)}, "statuses must be end statuses"),
        ({"workflow_id": "w", "statuses": ()}, "statuses must be end statuses"),
        ({"workflow_id": "w", "poll_interval": 0}, "poll_interval must be"),
        ({"workflow_id": "w", "poll_interval": "30"}, "poll_interval must be"),
    ],
)
def test_bad_arguments_fail_at_parse_time_naming_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoxusRunEventTrigger(**kwargs)


def test_serialize_round_trips_and_keys_the_trigger_by_its_arguments() -> None:
    trigger = NoxusRunEventTrigger("wf", statuses=["failed", "completed"], poll_interval=5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_noxus.triggers.events.NoxusRunEventTrigger"
    assert kwargs == {"workflow_id": "wf", "statuses": ["completed", "failed"],
                      "noxus_conn_id": "noxus_default", "poll_interval": 5.0}  # fmt: skip
    assert NoxusRunEventTrigger(**kwargs).serialize() == (classpath, kwargs)
