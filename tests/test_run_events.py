"""The event trigger's bookkeeping (run_events.py), without I/O: which runs become events, once each, from
what the list and the per-run reads say, with a bounded state that survives a JSON round trip.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_noxus import run_events
from airflow_provider_noxus.run_events import (
    GRACE_S,
    KNOWN_RUNS_TO_STOP,
    Observation,
    RunEventState,
    advance,
    baseline,
    event_payload,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
WF = "wf-1"


def run(run_id: str, minute: float, status: str = "running", **extra: Any) -> dict[str, Any]:
    created = T0 + timedelta(minutes=minute)
    finished = (created + timedelta(seconds=5)).isoformat() if status in run_events.ENDED else None
    return {"id": run_id, "workflow_id": WF, "status": status, "created_at": created.isoformat(),
            "finished_at": finished, **extra}  # fmt: skip


def head(*runs: dict[str, Any]) -> Observation:
    """A list read, newest first (runs given oldest first, as they were created)."""
    return Observation(head=tuple(reversed(runs)))


def ids(runs: list[Any]) -> list[str]:
    return [r["id"] for r in runs]


def test_history_makes_no_event_and_a_run_in_flight_at_start_makes_one_when_it_ends() -> None:
    state = baseline(head(run("old-done", 0, "completed"), run("old-running", 1)), WF, ("completed",))
    assert state.in_flight.keys() == {"old-running"}
    # The long-running run is now deep in the list; the watcher reads it by itself.
    later = Observation(
        head=(run("new", 30, "running"),), reads={"old-running": run("old-running", 1, "completed")}
    )
    assert ids(advance(state, later)) == ["old-running"]
    assert ids(advance(state, later)) == [], "told once"
    assert state.in_flight.keys() == {"new"}


def test_a_run_is_told_once_whatever_the_polls_that_see_it_ended() -> None:
    state = baseline(head(run("a", 0, "completed")), WF, ("completed",))
    assert ids(advance(state, head(run("a", 0, "completed"), run("b", 1, "completed")))) == ["b"]
    for _ in range(3):
        assert advance(state, head(run("a", 0, "completed"), run("b", 1, "completed"))) == []


def test_statuses_not_watched_end_the_tracking_without_an_event() -> None:
    state = baseline(head(run("a", 0)), WF, ("completed",))
    assert advance(state, head(run("a", 0, "failed"), run("b", 1, "stopped"))) == []
    assert state.in_flight == {}


def test_a_run_listed_below_newer_ones_within_the_grace_is_caught_once() -> None:
    state = baseline(head(run("a", 0, "completed"), run("c", 1, "completed")), WF, ("completed",))
    # "b" was created between a and c but committed late: it shows below c.
    late = Observation(head=(run("c", 1, "completed"), run("b", 0.5, "completed"), run("a", 0, "completed")))
    assert ids(advance(state, late)) == ["b"]
    assert advance(state, late) == []


def test_runs_older_than_the_grace_are_history_and_recent_ids_stay_bounded() -> None:
    state = baseline(head(run("a", 0, "completed")), WF, ("completed",))
    newer = [run(f"r{i}", 10 + i, "completed") for i in range(50)]
    assert len(advance(state, head(*newer))) == 50
    assert all(created >= state.mark - GRACE_S for created in state.recent.values())  # type: ignore[operator]
    assert len(state.recent) <= 2
    stale = Observation(head=(run("never-seen-old", 5, "completed"),))
    assert advance(state, stale) == [], "created long before the watermark: history"


def test_knows_head_stops_at_known_runs_or_below_the_floor() -> None:
    fresh = RunEventState(WF, ("completed",))
    assert not fresh.knows_head([run("a", 0)]), "a watcher that saw nothing reads the whole list"
    state = baseline(head(*[run(f"r{i}", i / 60, "completed") for i in range(40)]), WF, ("completed",))
    assert len(state.recent) == 40
    new_runs = [run(f"n{i}", 2 + i / 60, "completed") for i in range(5)]
    known = [run(f"r{i}", i / 60, "completed") for i in reversed(range(40))]
    assert not state.knows_head(new_runs)
    assert not state.knows_head([*new_runs, *known[: KNOWN_RUNS_TO_STOP - 1]])
    assert state.knows_head([*new_runs, *known[:KNOWN_RUNS_TO_STOP]])
    assert state.knows_head([*new_runs, run("x", -5, "completed")]), "a run below the floor"


def test_a_burst_larger_than_the_recent_ids_shrinks_the_grace_and_repeats_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_events, "MAX_RECENT", 10)
    state = baseline(head(run("a", 0, "completed")), WF, ("completed",))
    burst = [run(f"b{i:02d}", 1 + i / 600, "completed") for i in range(30)]  # 30 runs in 3 s
    assert len(advance(state, head(*burst))) == 30
    assert len(state.recent) == 10
    assert state.floor > state.mark - GRACE_S  # type: ignore[operator]
    assert advance(state, head(*burst)) == [], "the runs no longer remembered are below the floor"
    stored = json.loads(json.dumps(state.to_json()))
    assert RunEventState.from_json(stored, WF, ("completed",)) == state


def test_runs_gone_from_the_server_stop_being_tracked() -> None:
    state = baseline(head(run("a", 0)), WF, ("completed",))
    assert advance(state, Observation(gone=frozenset({"a"}))) == []
    assert state.in_flight == {}


def test_runs_without_a_believable_creation_time_are_ignored() -> None:
    state = baseline(head(run("a", 0, "completed")), WF, ("completed",))
    future = run("future", 0, "completed", created_at="2999-01-01T00:00:00Z")
    undated = run("undated", 0, "completed", created_at="yesterday")
    assert advance(state, Observation(head=(future, undated))) == []
    assert state.mark == pytest.approx(T0.timestamp())


def test_in_flight_is_capped_dropping_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_events, "MAX_IN_FLIGHT", 3)
    state = baseline(head(*[run(f"r{i}", i) for i in range(5)]), WF, ("completed",))
    assert state.in_flight.keys() == {"r2", "r3", "r4"}


def test_events_come_oldest_end_first() -> None:
    state = baseline(head(run("a", 0)), WF, ("completed",))
    ended = [run("x", 2, "completed"), run("y", 1, "completed")]
    assert ids(advance(state, head(*ended))) == ["y", "x"]


def test_state_round_trips_through_json_and_refuses_another_watchers() -> None:
    state = baseline(head(run("a", 0), run("b", 1, "completed")), WF, ("completed", "failed"))
    stored = json.loads(json.dumps(state.to_json()))
    assert RunEventState.from_json(stored, WF, ("completed", "failed")) == state
    assert RunEventState.from_json(stored, "other-wf", ("completed", "failed")) is None
    assert RunEventState.from_json(stored, WF, ("completed",)) is None
    broken_states = [
        None,
        "x",
        {**stored, "version": 99},
        {**stored, "in_flight": {"a": "soon"}},
        {**stored, "mark": True},
        {**stored, "cutoff": "x"},
        {**stored, "recent": []},
    ]
    for broken in broken_states:
        assert RunEventState.from_json(broken, WF, ("completed", "failed")) is None
    assert RunEventState(WF, ("completed",)).floor == -math.inf


def test_payload_has_ids_status_end_time_in_utc_and_link_never_the_output() -> None:
    ended = run("a", 0, "completed", output={"secret": "big"})
    ended["finished_at"] = "2026-12-01T13:00:05"  # no zone: UTC
    payload = event_payload(ended, WF, "https://app/runs/a")
    assert payload == {
        "run_id": "a",
        "workflow_id": WF,
        "status": "completed",
        "finished_at": "2026-12-01T13:00:05+00:00",
        "run_url": "https://app/runs/a",
    }
