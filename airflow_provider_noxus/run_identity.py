"""One Noxus run per intent: what identifies the run a task asks for, what a task instance remembers
of the run it made, and what to do about it at the start of a try, as a pure decision.

A task's *intent* is the workflow, the version and a fingerprint of the rendered inputs and run
options (canonical JSON; a file input by what it refers to: its URL, its ``spot://`` id, or the
SHA-256 of its content). The task instance keeps a :class:`RunRecord` in Airflow 3.3's
``task_state_store``: the intent, the run id once known and whether it is *proven own* (the create
answered it) or was adopted from the run list, whether the task already delivered that run's output,
and, while a create's answer is unknown, the window in which its run would have been created.

:func:`decide` takes the record, the intent, the try and what the server said so far and answers what
to do: create, stop then create, look the lost create up in the run list, read the run, adopt,
carry on waiting, return the output, or fail without guessing. The operator
(:mod:`airflow_provider_noxus.operators.noxus`) only performs it. The README's table of these rules is
tested against :func:`decide` (tests/test_run_identity.py).

A lost create is adopted only when exactly one run with this task's input and version was created
within its window (:class:`LookupWindow`), every look-up of that create counted together, in this try
and the next. Identical inputs sent in the same window are indistinguishable to the API: then nothing
is adopted and the task fails, naming the runs.

The module is over 400 lines because the record, the window, the look-up and the decision are one set
of rules that must be read together (each refers to the others' fields and bounds).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from airflow_provider_noxus.exceptions import NoxusError
from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.protocol import (
    FAILURE_STATUSES,
    SYNC_ENDPOINT_TIMEOUT_S,
    NoxusRunStatus,
    RetryPolicy,
    spot_uri,
)
from airflow_provider_noxus.run_list import parse_run_page, run_created_at

#: ``task_state_store`` key of the :class:`RunRecord`.
RUN_RECORD_KEY = "noxus_run"
#: Version of the stored record's layout; a record of another version is ignored (version 2, without
#: the window and ownership fields, is read with their defaults).
RECORD_VERSION = 3
READABLE_RECORD_VERSIONS = (2, RECORD_VERSION)
#: Largest difference between the worker's clock and the server's that a look-up allows, either way.
#: Both are expected to keep NTP time (milliseconds apart). A server clock ahead by more than this is
#: detected (a listed run created "in the future") and the look-up refuses to conclude; one behind by
#: more cannot be seen, and the lost run is then not found (no adoption: never someone else's run).
MAX_CLOCK_SKEW_S = 1.0
#: How long after the failed create was seen the server may still create its run (it was handling
#: the request when a proxy or the client's timeout gave up).
LATE_CREATE_S = 2.0
#: How long a run created in the window may take to appear in the run list.
LIST_SETTLE_S = 1.0
#: Longest a try sleeps for a window to settle; past it the try fails and a later one decides.
MAX_SETTLE_WAIT_S = 60.0
#: How long after the window settled a try keeps re-reading a run list it could not read or trust.
UNREADABLE_GRACE_S = 5.0
#: Pause between two reads of a run list that could not be read or trusted.
UNREADABLE_RETRY_S = 1.0
#: Pages of 100 runs read, at most, in one look-up; a look-up that did not reach back to the window's
#: start within them cannot say "exactly one".
LOOKUP_PAGE_BUDGET = 5
LOOKUP_PAGE_SIZE = 100
#: Window end of a record whose create never reported back (the try was killed during it; or a
#: version-2 record): the latest its answer could have come, retries included.
UNREPORTED_ANSWER_S = SYNC_ENDPOINT_TIMEOUT_S + RetryPolicy().total_budget

ListRunsPage = Callable[[int, int], Any]


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces; NaN and infinities refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _content_sha256(file: NoxusFile) -> str | None:
    if isinstance(file.source, bytes):
        return hashlib.sha256(file.source).hexdigest()
    digest = hashlib.sha256()
    try:
        with Path(str(file.source)).open("rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    except OSError:
        return None  # reading it for the run will fail with a clear message
    return digest.hexdigest()


def _file_reference(file: NoxusFile) -> dict[str, Any]:
    """What a file input refers to, stable across tries (an upload gets a new ``spot://`` id each time)."""
    if file.kind == "url":
        reference = str(file.source)
    elif file.kind == "spot":
        reference = spot_uri(str(file.source))
    else:
        sha256 = _content_sha256(file)
        reference = f"sha256:{sha256}" if sha256 else f"path:{file.source!s}"
    return {"noxus_file": file.kind, "ref": reference, "name": file.default_name()}


def _identity_value(value: Any) -> Any:
    if isinstance(value, NoxusFile):
        return _file_reference(value)
    if isinstance(value, Mapping):
        return {str(key): _identity_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_identity_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # refused with a clear message when the body is built
    return value


def intent_fingerprint(
    workflow_id: str,
    inputs: Mapping[str, Any],
    *,
    workflow_version_id: str | None,
    node_ids: Any,
    callback_url: str | None,
    use_sync_endpoint: bool,
) -> str:
    """The fingerprint of what a task asks Noxus to run (inputs rendered, files not yet resolved)."""
    return fingerprint(
        {
            "workflow_id": workflow_id,
            "workflow_version_id": workflow_version_id,
            "inputs": _identity_value(inputs),
            "node_ids": _identity_value(node_ids),
            "callback_url": callback_url,
            "sync": use_sync_endpoint,
        }
    )


@dataclass(frozen=True)
class LookupWindow:
    """When, on the worker's clock, the run of a create whose answer was lost can have been created.

    :param start: the send, less :data:`MAX_CLOCK_SKEW_S`.
    :param end: when the failure was seen (or the create's last possible answer), plus
        :data:`LATE_CREATE_S` and :data:`MAX_CLOCK_SKEW_S`.
    """

    start: float
    end: float

    @property
    def settled_at(self) -> float:
        """From when a look-up sees every run created in the window."""
        return self.end + LIST_SETTLE_S

    def holds(self, created_at: float | None) -> bool:
        return created_at is not None and self.start <= created_at <= self.end


@dataclass(frozen=True)
class RunRecord:
    """What a task instance keeps of its run between tries.

    :param workflow_id: the run's workflow.
    :param intent: the :func:`intent_fingerprint` of the try that made it.
    :param run_id: the run, once the create answered (or the run was adopted).
    :param delivered: the task succeeded with this run's result: a later try (a clear) makes a new run.
    :param sent_at: epoch seconds at which the create was sent, while its answer is unknown.
    :param input_fingerprint: :func:`fingerprint` of the ``input`` sent, while the answer is unknown.
    :param max_tries: the task instance's ``max_tries`` when the run was made: Airflow raises it when
        the task instance is cleared (and only then), so a later try can tell a clear from a retry.
    :param answer_by: epoch seconds by which the create's run was made if it was made at all: when its
        failure was seen, else the latest its answer could come (retries included).
    :param seen: the runs every look-up of this create found in its window, together.
    :param own: the create's own answer named ``run_id``: only then may the task stop it. An adopted
        run is not proven to be this task's and is never stopped.
    """

    workflow_id: str
    intent: str
    run_id: str | None = None
    delivered: bool = False
    sent_at: float | None = None
    input_fingerprint: str | None = None
    max_tries: int | None = None
    answer_by: float | None = None
    seen: tuple[str, ...] = ()
    own: bool = True

    def cleared_since(self, max_tries: int | None) -> bool:
        """Whether the task instance was cleared since this record was made."""
        return self.max_tries is not None and max_tries is not None and max_tries != self.max_tries

    @property
    def pending(self) -> bool:
        """A create was sent and no run id is known."""
        return self.run_id is None and self.sent_at is not None

    @property
    def latest_answer(self) -> float:
        """The latest moment the pending create's run can have been made (less :data:`LATE_CREATE_S`)."""
        assert self.sent_at is not None
        return self.answer_by if self.answer_by is not None else self.sent_at + UNREPORTED_ANSWER_S

    @property
    def window(self) -> LookupWindow:
        """The :class:`LookupWindow` of the pending create."""
        assert self.sent_at is not None
        end = self.latest_answer + LATE_CREATE_S + MAX_CLOCK_SKEW_S
        return LookupWindow(self.sent_at - MAX_CLOCK_SKEW_S, end)

    def with_run(self, run_id: str) -> RunRecord:
        """The create answered ``run_id``: proven own."""
        return replace(
            self, run_id=run_id, sent_at=None, input_fingerprint=None, answer_by=None, seen=(), own=True
        )

    def adopted(self, run_id: str) -> RunRecord:
        """``run_id`` was found in the run list: carried on with, not proven own (the window stays)."""
        return replace(self, run_id=run_id, own=False)

    def failed_at(self, seen_at: float) -> RunRecord:
        """The create's failure was seen at ``seen_at``: its window closes from there."""
        return replace(self, answer_by=seen_at)

    def ended_by(self, moment: float) -> RunRecord:
        """The try that sent the pending create was over by ``moment`` (a later try started): its
        create got no answer after that, so the window closes then at the latest."""
        return replace(self, answer_by=min(self.latest_answer, moment))

    def with_seen(self, run_ids: tuple[str, ...]) -> RunRecord:
        return replace(self, seen=tuple(dict.fromkeys((*self.seen, *run_ids))))

    def as_delivered(self) -> RunRecord:
        return replace(self, delivered=True)

    def to_store(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self), "seen": list(self.seen)}

    @classmethod
    def from_store(cls, value: Any) -> RunRecord | None:
        """The record read from the store, or None when there is none this version understands."""
        if not isinstance(value, Mapping) or value.get("version") not in READABLE_RECORD_VERSIONS:
            return None

        def number(key: str, kind: Callable[[Any], Any]) -> Any:
            return kind(value[key]) if value.get(key) is not None else None

        try:
            return cls(
                workflow_id=str(value["workflow_id"]),
                intent=str(value["intent"]),
                run_id=str(value["run_id"]) if value.get("run_id") else None,
                delivered=bool(value.get("delivered")),
                sent_at=number("sent_at", float),
                input_fingerprint=value.get("input_fingerprint"),
                max_tries=number("max_tries", int),
                answer_by=number("answer_by", float),
                seen=tuple(str(run_id) for run_id in value.get("seen") or ()),
                own=bool(value.get("own", True)),
            )
        except (KeyError, TypeError, ValueError):
            return None


class RunLedger:
    """The task instance's :class:`RunRecord`, in ``task_state_store`` when Airflow has one (3.3+),
    else for this try only.

    :param store: the context's ``task_state_store``, or None.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self.record: RunRecord | None = RunRecord.from_store(store.get(RUN_RECORD_KEY)) if store else None

    @property
    def durable(self) -> bool:
        """Whether the record survives this try."""
        return self._store is not None

    def save(self, record: RunRecord) -> None:
        self.record = record
        if self._store is not None:
            self._store.set(RUN_RECORD_KEY, record.to_store())


# ---- looking a lost create up in the run list ---------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """What one read of the workflow's run list says about a lost create.

    :param candidates: the listed runs created in the window with the record's input and version.
    :param read_at: epoch seconds at which the first page was asked for.
    :param problem: why the read cannot be trusted to have seen every candidate (the list could not be
        read, ran past the page budget, or the server's clock is ahead of the worker's), or None.
    """

    candidates: tuple[Mapping[str, Any], ...]
    read_at: float
    problem: str | None = None

    @property
    def candidate_ids(self) -> tuple[str, ...]:
        return tuple(str(run["id"]) for run in self.candidates)


def is_candidate(
    run: Mapping[str, Any], record: RunRecord, window: LookupWindow, workflow_version_id: str | None
) -> bool:
    """Whether a listed ``run`` may be the one the record's create made: created in the window, with
    the same input and version."""
    if not window.holds(run_created_at(run)):
        return False
    if (run.get("workflow_version_id") or None) != (workflow_version_id or None):
        return False
    run_input = run.get("input")
    return isinstance(run_input, Mapping) and fingerprint(run_input) == record.input_fingerprint


def look_up(
    list_page: ListRunsPage,
    record: RunRecord,
    workflow_version_id: str | None,
    clock: Callable[[], float] = time.time,
) -> Lookup:
    """Read the workflow's newest runs (newest first) back to the record's window start, at most
    :data:`LOOKUP_PAGE_BUDGET` pages, and collect the candidates; errors become the lookup's problem.

    :param list_page: ``(page, size)`` -> the decoded answer of the run list.
    """
    window = record.window
    read_at = clock()
    found: dict[str, Mapping[str, Any]] = {}
    try:
        for number in range(1, LOOKUP_PAGE_BUDGET + 1):
            page = parse_run_page(
                list_page(number, LOOKUP_PAGE_SIZE),
                workflow_id=record.workflow_id,
                page=number,
                size=LOOKUP_PAGE_SIZE,
            )
            answered_at = clock()
            for run in page.items:
                created = run_created_at(run)
                if created is not None and created > answered_at + MAX_CLOCK_SKEW_S:
                    return Lookup(
                        (),
                        read_at,
                        f"the server lists run {run['id']} as created {created - answered_at:.1f} s after "
                        "this worker read the list: its clock is ahead of the worker's by more than "
                        f"{MAX_CLOCK_SKEW_S:g} s, so the send window cannot be matched",
                    )
                if is_candidate(run, record, window, workflow_version_id):
                    found.setdefault(str(run["id"]), run)
            oldest = run_created_at(page.items[-1]) if page.items else None
            if page.last or (oldest is not None and oldest < window.start):
                return Lookup(tuple(found.values()), read_at)
    except NoxusError as error:
        return Lookup((), read_at, f"the run list could not be read: {error}")
    return Lookup(
        (),
        read_at,
        f"over {LOOKUP_PAGE_BUDGET * LOOKUP_PAGE_SIZE} runs were created since the send; not all were read",
    )


# ---- the decision ------------------------------------------------------------------------------


class Action(str, Enum):
    """What the operator does next."""

    CREATE = "create"
    STOP_THEN_CREATE = "stop_then_create"
    LOOK_UP = "look_up"
    ADOPT = "adopt"
    READ_RUN = "read_run"
    WAIT = "wait"
    RETURN_OUTPUT = "return_output"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    """One step of finding the task's run.

    :param action: what to do.
    :param reason: why, in words for the task log (or the error, for ``FAIL``).
    :param run_id: the run concerned: to stop, to adopt, to read, to wait on.
    :param after: ``LOOK_UP`` only: seconds to wait before reading the list.
    :param candidates: ``FAIL`` for ambiguity only: the runs that could each be the lost create's (a
        later try fails the same way; a clear makes a new run).
    """

    action: Action
    reason: str
    run_id: str | None = None
    after: float = 0.0
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerView:
    """What the server said so far in this step of the try.

    :param lookup: the latest look-up of a pending create.
    :param run: the recorded run, as read.
    :param run_gone: the recorded run no longer exists (404).
    """

    lookup: Lookup | None = None
    run: Mapping[str, Any] | None = None
    run_gone: bool = False


def decide(
    record: RunRecord | None,
    intent: str,
    max_tries: int | None,
    view: ServerView,
    *,
    now: float,
    same_try: bool = False,
) -> Decision:
    """What to do, given the task instance's record, the try's intent and ``max_tries`` and what the
    server said (the README's table, as code).

    :param same_try: the record's create was sent by this try (its look-up may wait for the window to
        settle; finding nothing fails the try, and the next try looks again before creating).
    """
    if record is None:
        return Decision(Action.CREATE, "no earlier try of this task made a run")
    if record.delivered:
        return Decision(
            Action.CREATE,
            f"Noxus run {record.run_id} already delivered its result to an earlier try (the task was "
            "cleared or re-run)",
        )
    changed = _change(record, intent, max_tries)
    if record.pending:
        if changed:
            return Decision(
                Action.CREATE,
                f"{changed}; the run a lost create of the earlier try may have made is not proven to be "
                "this task's and is left as it is",
            )
        return _after_lost_create(record, view.lookup, now=now, same_try=same_try)
    assert record.run_id is not None
    if changed:
        if record.own:
            return Decision(Action.STOP_THEN_CREATE, f"{changed}; a new run replaces it", record.run_id)
        return Decision(
            Action.CREATE,
            f"{changed}; Noxus run {record.run_id} was adopted, not proven to be this task's, and is "
            "left running",
            record.run_id,
        )
    if view.run_gone:
        return Decision(Action.CREATE, f"the Noxus run {record.run_id} of an earlier try no longer exists")
    if view.run is None:
        return Decision(Action.READ_RUN, "an earlier try made a run", record.run_id)
    status = view.run.get("status")
    if NoxusRunStatus.parse(status) in FAILURE_STATUSES:
        return Decision(Action.CREATE, f"the Noxus run {record.run_id} of an earlier try ended {status}")
    if NoxusRunStatus.parse(status) is NoxusRunStatus.COMPLETED:
        return Decision(
            Action.RETURN_OUTPUT, f"Noxus run {record.run_id} of an earlier try completed", record.run_id
        )
    return Decision(
        Action.WAIT, f"reattaching to Noxus run {record.run_id} ({status}) of an earlier try", record.run_id
    )


def _change(record: RunRecord, intent: str, max_tries: int | None) -> str | None:
    """Why the record's run is not this try's to carry on with, or None."""
    if record.intent != intent:
        return "the task's workflow, version, inputs or options changed since the try that started its run"
    if record.cleared_since(max_tries):
        return "the task was cleared since the try that started its run"
    return None


def _after_lost_create(record: RunRecord, lookup: Lookup | None, *, now: float, same_try: bool) -> Decision:
    """The decision about a create whose answer was lost, from the look-ups made so far."""
    window = record.window
    if lookup is None:
        return Decision(Action.LOOK_UP, "the answer to the run creation was lost")
    seen = record.with_seen(lookup.candidate_ids).seen
    if len(seen) > 1:
        return Decision(
            Action.FAIL,
            f"{len(seen)} runs of workflow {record.workflow_id} with this task's input and version were "
            f"created while its create was in flight ({', '.join(seen)}); the API cannot tell which one, "
            "if any, this task made, so none is adopted (it could be another task's) and no new one is "
            "created (it would run the same input once more). Check those runs; clear the task to make "
            "a new run",
            candidates=seen,
        )
    unsettled = lookup.read_at < window.settled_at
    if lookup.problem is not None or unsettled:
        wait = max(0.0, window.settled_at - now) if unsettled else UNREADABLE_RETRY_S
        if wait <= MAX_SETTLE_WAIT_S and now < window.settled_at + UNREADABLE_GRACE_S:
            reason = lookup.problem or "runs created in the window may not be listed yet"
            return Decision(Action.LOOK_UP, reason, after=wait)
        return Decision(
            Action.FAIL,
            "whether the lost run creation made a run cannot be told yet ("
            + (lookup.problem or f"its window is open until {window.settled_at - now:.0f} s from now")
            + ")",
        )
    if seen:
        if seen[0] in lookup.candidate_ids:
            return Decision(
                Action.ADOPT,
                f"Noxus run {seen[0]} is the only run with this task's input and version created while "
                "its create was in flight: adopting it (not proven to be this task's: it will not be "
                "stopped by this task)",
                seen[0],
            )
        return Decision(
            Action.FAIL,
            f"Noxus run {seen[0]}, the only candidate for the lost run creation, is no longer listed",
        )
    if same_try:
        return Decision(
            Action.FAIL,
            "the run creation got no usable answer and no run made by it was found in the workflow's newest "
            "runs",
        )
    return Decision(
        Action.CREATE,
        "the earlier try's run creation got no answer and made no run (none was listed in its window)",
    )


__all__ = [
    "RUN_RECORD_KEY",
    "Action",
    "Decision",
    "Lookup",
    "LookupWindow",
    "RunLedger",
    "RunRecord",
    "ServerView",
    "canonical_json",
    "decide",
    "fingerprint",
    "intent_fingerprint",
    "is_candidate",
    "look_up",
]
