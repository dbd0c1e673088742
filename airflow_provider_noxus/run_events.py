"""Which runs of a workflow became events: the event trigger's bookkeeping, without I/O.

The run list is ordered by creation, newest first, but a run created long ago can end now. So a
watcher tracks three things (:class:`RunEventState`), all bounded:

- ``mark``: the newest ``created_at`` seen. Runs created before ``mark - GRACE_S`` and not in flight are
  history: a poll reads the list only down to there (the new head), not the workflow's whole history;
- ``recent``: the ids of the runs created in that grace window, so a run listed slightly out of
  creation order (concurrent creates) is neither missed nor counted twice;
- ``in_flight``: runs seen not ended yet (at most :data:`MAX_IN_FLIGHT`), read again each poll: from
  the head when they are in it, else one by one.

A run becomes an event once, when it is seen ended with one of the watched statuses, and only if it
was first seen in flight or created after the watcher first started (:func:`baseline`): runs that had
ended before are history. The state is JSON (:meth:`RunEventState.to_json`) so that Airflow's asset
state store keeps it across triggerer restarts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_noxus.protocol import TERMINAL_STATUSES
from airflow_provider_noxus.run_list import run_created_at, run_finished_at

log = logging.getLogger(__name__)

#: Seconds by which the list's order may disagree with ``created_at`` and a new run is still caught.
GRACE_S = 60.0
#: Known runs a poll must see in the list, below the new ones, to be sure it read every new run (a run
#: committed late lands a few places below newer ones, not further).
KNOWN_RUNS_TO_STOP = 20
#: Most runs tracked in flight per watcher; past it the oldest are dropped, with a warning.
MAX_IN_FLIGHT = 1_000
#: A ``created_at`` further than this in the future is not believed (it would hide every later run).
MAX_FUTURE_S = 600.0
#: Most recent ids kept; in a burst larger than this within :data:`GRACE_S` the grace shrinks to fit.
MAX_RECENT = 2_000
#: Version of the stored state; a state of another version (or another workflow) is not used.
STATE_VERSION = 1

ENDED = frozenset(status.value for status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class Observation:
    """What one poll read.

    :param head: the run list from its first page down past the poll's floor (or to its end), newest
        first: every run created since then, whatever its status.
    :param reads: runs in flight but not in the head, read one by one, by id.
    :param gone: runs in flight that the server no longer has (404).
    """

    head: tuple[Mapping[str, Any], ...] = ()
    reads: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    gone: frozenset[str] = frozenset()


@dataclass
class RunEventState:
    """A watcher's bookkeeping (see the module docstring).

    :param workflow_id: the workflow watched.
    :param statuses: the end statuses that make events.
    :param mark: the newest ``created_at`` seen (epoch seconds), None before any run was seen.
    :param recent: ids of runs created since ``mark - GRACE_S``, with their ``created_at``.
    :param in_flight: ids of runs seen not ended, with their ``created_at``.
    :param cutoff: runs created before it are history even within the grace (set when a burst
        outgrew :data:`MAX_RECENT`).
    """

    workflow_id: str
    statuses: tuple[str, ...]
    mark: float | None = None
    recent: dict[str, float] = field(default_factory=dict)
    in_flight: dict[str, float] = field(default_factory=dict)
    cutoff: float | None = None

    @property
    def floor(self) -> float:
        """How far down (by ``created_at``) a poll must read the list: below it, runs are history."""
        if self.mark is None:
            return -math.inf
        return max(self.mark - GRACE_S, -math.inf if self.cutoff is None else self.cutoff)

    def knows_head(self, head: Sequence[Mapping[str, Any]]) -> bool:
        """Whether ``head`` (the list from its top, newest first) reaches down to runs already known:
        :data:`KNOWN_RUNS_TO_STOP` of the recent runs (all of them, when fewer), or a run older than
        :attr:`floor`. A state that has seen no run yet knows no head: the list is read to its end."""
        if self.mark is None:
            return False
        known = sum(1 for run in head if run.get("id") in self.recent)
        if known >= min(KNOWN_RUNS_TO_STOP, len(self.recent)):
            return True
        floor = self.floor
        return any((created := run_created_at(run)) is not None and created < floor for run in head)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "workflow_id": self.workflow_id,
            "statuses": list(self.statuses),
            "mark": self.mark,
            "recent": dict(self.recent),
            "in_flight": dict(self.in_flight),
            "cutoff": self.cutoff,
        }

    @classmethod
    def from_json(cls, value: Any, workflow_id: str, statuses: Sequence[str]) -> RunEventState | None:
        """The state stored by a watcher of the same workflow and statuses; None for anything else (no
        state, another version, another watcher's, or not readable)."""
        if not isinstance(value, Mapping) or value.get("version") != STATE_VERSION:
            return None
        if value.get("workflow_id") != workflow_id or value.get("statuses") != list(statuses):
            return None
        recent, in_flight = _id_times(value.get("recent")), _id_times(value.get("in_flight"))
        if recent is None or in_flight is None:
            return None
        try:
            mark, cutoff = _time_or_none(value.get("mark")), _time_or_none(value.get("cutoff"))
        except ValueError:
            return None
        return cls(workflow_id, tuple(statuses), mark, recent, in_flight, cutoff)


def _time_or_none(value: Any) -> float | None:
    """A stored time as a float, None when absent; ValueError when it is not a time."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    return float(value)


def _id_times(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    if not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        return None
    return {k: float(v) for k, v in value.items()}


def baseline(observation: Observation, workflow_id: str, statuses: Sequence[str]) -> RunEventState:
    """The state of a watcher starting now, from a read of the whole list: runs in flight are tracked,
    runs already ended are history (no events)."""
    state = RunEventState(workflow_id, tuple(statuses))
    for run, created in _dated(observation.head):
        state.mark = created if state.mark is None else max(state.mark, created)
        if run.get("status") not in ENDED:
            state.in_flight[str(run["id"])] = created
    _remember_recent(state, observation.head)
    _cap_in_flight(state)
    return state


def advance(state: RunEventState, observation: Observation) -> list[Mapping[str, Any]]:
    """Update ``state`` with a poll's ``observation``; the runs that became events, oldest end first."""
    events: list[Mapping[str, Any]] = []
    floor = state.floor
    seen = [*observation.head, *observation.reads.values()]
    for run, created in _dated(seen):
        run_id = str(run["id"])
        tracked = run_id in state.in_flight
        new = not tracked and run_id not in state.recent and created >= floor
        if not (tracked or new):
            continue  # history, or already told
        if run.get("status") in ENDED:
            state.in_flight.pop(run_id, None)
            if run.get("status") in state.statuses:
                events.append(run)
        else:
            state.in_flight[run_id] = created
        if new:
            state.recent[run_id] = created
    for run_id in observation.gone:
        if state.in_flight.pop(run_id, None) is not None:
            log.warning(
                "Noxus run %s of workflow %s is gone from the server: it makes no event.",
                run_id,
                state.workflow_id,
            )
    for _, created in _dated(observation.head):
        state.mark = created if state.mark is None else max(state.mark, created)
    _remember_recent(state, ())
    _cap_in_flight(state)
    events.sort(key=lambda run: run_finished_at(run) or math.inf)
    return events


def _dated(runs: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], float]]:
    """``runs`` with their ``created_at``; a run without a believable one cannot be placed and is
    skipped."""
    dated = []
    latest = time.time() + MAX_FUTURE_S
    for run in runs:
        created = run_created_at(run)
        if created is None or created > latest:
            log.warning("Noxus run %s has no believable created_at; it is ignored.", run.get("id"))
            continue
        dated.append((run, created))
    return dated


def _remember_recent(state: RunEventState, head: Sequence[Mapping[str, Any]]) -> None:
    for run, created in _dated(head):
        state.recent[str(run["id"])] = created
    floor = state.floor
    state.recent = {run_id: created for run_id, created in state.recent.items() if created >= floor}
    if len(state.recent) > MAX_RECENT:
        newest_first = sorted(state.recent.values(), reverse=True)
        boundary = newest_first[MAX_RECENT]
        state.cutoff = math.nextafter(boundary, math.inf)
        state.recent = {run_id: created for run_id, created in state.recent.items() if created > boundary}


def _cap_in_flight(state: RunEventState) -> None:
    excess = len(state.in_flight) - MAX_IN_FLIGHT
    if excess <= 0:
        return
    oldest = sorted(state.in_flight, key=state.in_flight.__getitem__)[:excess]
    for run_id in oldest:
        del state.in_flight[run_id]
    log.warning(
        "Workflow %s has more than %d runs in flight; the %d oldest are no longer watched and will make "
        "no event.",
        state.workflow_id,
        MAX_IN_FLIGHT,
        excess,
    )


def event_payload(run: Mapping[str, Any], workflow_id: str, run_url: str) -> dict[str, Any]:
    """The asset event payload of an ended ``run``: ids, status, end time (ISO 8601, UTC) and link."""
    from airflow_provider_noxus.assets import run_event_extra

    finished = run_finished_at(run)
    return run_event_extra(
        run_id=str(run["id"]),
        workflow_id=workflow_id,
        status=str(run.get("status")),
        run_url=run_url,
        finished_at=None if finished is None else datetime.fromtimestamp(finished, timezone.utc).isoformat(),
    )


__all__ = [
    "ENDED",
    "GRACE_S",
    "MAX_IN_FLIGHT",
    "Observation",
    "RunEventState",
    "advance",
    "baseline",
    "event_payload",
]
