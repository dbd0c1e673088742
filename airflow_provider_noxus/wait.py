"""The wait for a Noxus run, written once: an I/O-free state machine and the two loops that drive it.

:class:`RunWait` is told what happened (a status read, event-stream frames, the stream closing, an
error) and answers what to do next (:meth:`RunWait.next_action`, which changes nothing): finish with
an outcome, sleep, read the run's status, open or read the event stream. Every decision of a wait
lives there: final statuses, human feedback, unknown or missing statuses, backoff after errors and its
floor, the deadline, stream failures and the fall-back to polling, the periodic status check while
streaming, progress logging. Whether a wait streams at all is :func:`streams`.

Two drivers feed it: :func:`drive` (blocking, over :class:`WaitIO`: the hook's ``wait`` and
``wait_for_run``, the operator with ``deferrable=False``) and :func:`adrive` (the trigger, in the
triggerer's event loop, over :class:`AsyncWaitIO`). They only perform the I/O an action asks for and
report the result, so the same arguments behave the same on a worker and in the triggerer. (The
sensor's poke mode reads the status once per poke and judges it with :func:`judge_run`.)

A wait ends with a :class:`WaitOutcome`, which is also the payload of the trigger's event; what an
outcome means for a task (its result or its error) is :mod:`airflow_provider_noxus.run_result`.

The module is over 400 lines because the state machine, its actions, its outcome and its drivers are
one rule set that reads best in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from airflow_provider_noxus import exceptions
from airflow_provider_noxus.exceptions import (
    NoxusConfigurationError,
    NoxusError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusServerError,
    NoxusTLSError,
    NoxusTransportError,
)
from airflow_provider_noxus.protocol import (
    TERMINAL_STATUSES,
    NoxusRunStatus,
    RetryPolicy,
    RunEvent,
    backoff_seconds,
)

WaitStrategy = Literal["auto", "stream", "poll"]
WAIT_STRATEGIES: tuple[WaitStrategy, ...] = ("auto", "stream", "poll")
HUMAN_FEEDBACK_ACTIONS = ("wait", "fail")
DEFAULT_POLL_INTERVAL_S = 5.0
#: Consecutive event-stream failures (errors, or closes with no new frame) before polling instead.
STREAM_FAILURES_BEFORE_POLLING = 3
#: While streaming, the run's status is also read every this many poll intervals: a stream that stays
#: open but never sends the final frame (a proxy, a server bug) cannot hold the wait past the run's end.
STATUS_CHECK_EVERY_POLL_INTERVALS = 6
#: Longest silence accepted on an open event stream (the server sends ``: keep-alive`` every 15 s).
STREAM_IDLE_TIMEOUT_S = 45.0
#: Cap of the wait between two attempts after errors, whatever the poll interval.
MAX_WAIT_BACKOFF_S = 60.0
#: Distinct unknown statuses a wait warns about; past it, one line says the rest are not logged.
MAX_UNKNOWN_STATUS_WARNINGS = 5
#: Node lines logged per read; past it, one line counts the rest.
MAX_NODE_LINES_PER_READ = 20

OUTCOME_SUCCESS = "success"
OUTCOME_FAILED = "failed"
OUTCOME_STOPPED = "stopped"
OUTCOME_TIMEOUT = "timeout"
OUTCOME_ERROR = "error"

#: The outcome of each final run status (:data:`~airflow_provider_noxus.protocol.TERMINAL_STATUSES`).
OUTCOME_OF_FINAL_STATUS = {
    NoxusRunStatus.COMPLETED: OUTCOME_SUCCESS,
    NoxusRunStatus.FAILED: OUTCOME_FAILED,
    NoxusRunStatus.STOPPED: OUTCOME_STOPPED,
}
assert set(OUTCOME_OF_FINAL_STATUS) == TERMINAL_STATUSES, "every final status has an outcome"

#: Errors after which a wait goes on (after a backoff): the server or the network may recover.
#: Anything else (a refused key, a missing run, a TLS failure, a bad setting) ends the wait.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    NoxusServerError,
    NoxusRateLimitedError,
    NoxusTransportError,
    NoxusProtocolError,
    TimeoutError,
    asyncio.TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    """Whether waiting may go on after ``error`` (a TLS failure will not heal by itself)."""
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, NoxusTLSError)


def _finite_seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as seconds, refusing what is not a finite number above 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NoxusConfigurationError(f"{name} must be a number of seconds, got {value!r}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "above 0"
        raise NoxusConfigurationError(f"{name} must be a finite number of seconds {bound}, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class WaitOptions:
    """How to wait, as a task or a trigger is told; checked when built (at DAG parse for tasks).

    :param strategy: ``stream`` (follow the event stream, polling after repeated stream failures),
        ``poll``, or ``auto`` (stream; in the triggerer, poll once many triggers of the process stream).
    :param poll_interval: seconds between status reads when polling.
    :param on_human_feedback: ``wait`` keeps waiting while the run awaits human feedback; ``fail``
        ends the wait with a ``failed`` outcome.
    """

    strategy: str = "auto"
    poll_interval: float = DEFAULT_POLL_INTERVAL_S
    on_human_feedback: str = "wait"

    def __post_init__(self) -> None:
        if self.strategy not in WAIT_STRATEGIES:
            raise NoxusConfigurationError(
                f"wait_strategy must be one of {WAIT_STRATEGIES}, got {self.strategy!r}."
            )
        if self.on_human_feedback not in HUMAN_FEEDBACK_ACTIONS:
            raise NoxusConfigurationError(
                f"on_human_feedback must be one of {HUMAN_FEEDBACK_ACTIONS}, got {self.on_human_feedback!r}."
            )
        object.__setattr__(self, "poll_interval", _finite_seconds("poll_interval", self.poll_interval))


def check_timeout(name: str, value: float | None) -> float | None:
    """A wait's limit in seconds: None, or a finite number above 0."""
    return None if value is None else _finite_seconds(name, value)


def streams(strategy: str, *, room: bool = True) -> bool:
    """Whether a wait with ``strategy`` follows the event stream: ``stream`` always, ``poll`` never,
    ``auto`` while there is ``room`` (the triggerer caps how many of its triggers stream)."""
    return strategy == "stream" or (strategy == "auto" and room)


# --------------------------------------------------------------------------------------------
# The outcome (also the trigger's event payload)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended.

    :param status: ``success``, ``failed``, ``stopped``, ``timeout`` or ``error``.
    :param run_id: the run waited for.
    :param workflow_id: its workflow.
    :param message: what happened, in words a person understands.
    :param run_status: the run's own status when last seen (e.g. ``awaiting_human_feedback``).
    :param last_event_id: the last event-stream id seen.
    :param error_type: for ``error``, the class name of the :class:`NoxusError` that ended the wait.
    :param error: for ``error`` on a worker, that error itself (not part of the event).
    """

    status: str
    run_id: str
    workflow_id: str
    message: str
    run_status: str | None = None
    last_event_id: str | None = None
    error_type: str | None = None
    error: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def refused_feedback(self) -> bool:
        """The wait failed because the run paused for human feedback with ``on_human_feedback='fail'``."""
        return (
            self.status == OUTCOME_FAILED and self.run_status == NoxusRunStatus.AWAITING_HUMAN_FEEDBACK.value
        )

    @property
    def run_ended(self) -> bool:
        """Whether the wait saw the run at a final status (else it timed out, failed to wait, or
        refused human feedback while the run still goes on)."""
        return self.status in OUTCOME_OF_FINAL_STATUS.values() and not self.refused_feedback

    def to_event(self) -> dict[str, Any]:
        """The payload of the trigger's event: plain JSON values only."""
        return {
            "status": self.status,
            "run_id": self.run_id,
            "workflow_id": self.workflow_id,
            "message": self.message,
            "run_status": self.run_status,
            "last_event_id": self.last_event_id,
            "error_type": self.error_type,
        }

    @classmethod
    def from_event(cls, payload: Mapping[str, Any]) -> WaitOutcome:
        """Read a trigger event's payload (keys this version does not know are ignored)."""
        return cls(
            status=str(payload["status"]),
            run_id=str(payload["run_id"]),
            workflow_id=str(payload["workflow_id"]),
            message=str(payload.get("message") or ""),
            run_status=payload.get("run_status"),
            last_event_id=payload.get("last_event_id"),
            error_type=payload.get("error_type"),
        )

    def as_error(self) -> NoxusError:
        """For an ``error`` outcome, the error that ended the wait: the original one on a worker; from
        an event, one of the same class (so a refused key still fails the task without its retries)."""
        if isinstance(self.error, NoxusError):
            return self.error
        error_class = getattr(exceptions, self.error_type or "", None)
        if not (isinstance(error_class, type) and issubclass(error_class, NoxusError)):
            error_class = exceptions.NoxusRunError
        return error_class(self.message, run_id=self.run_id, workflow_id=self.workflow_id)


def error_outcome(
    run_id: str,
    workflow_id: str,
    error: BaseException,
    *,
    message: str | None = None,
    run_status: str | None = None,
    last_event_id: str | None = None,
) -> WaitOutcome:
    """The ``error`` outcome of a wait ended by ``error`` (the one place it is built).

    :param message: what to say instead of "Stopped waiting for Noxus run ...: <error>".
    """
    return WaitOutcome(
        OUTCOME_ERROR,
        run_id,
        workflow_id,
        message or f"Stopped waiting for Noxus run {run_id}: {describe(error)}",
        run_status=run_status,
        last_event_id=last_event_id,
        error_type=type(error).__name__ if isinstance(error, NoxusError) else None,
        error=error,
    )


def describe(error: BaseException) -> str:
    """An error in a few words (its message, else its class name)."""
    if isinstance(error, NoxusError):
        return str(error)
    return str(error) or type(error).__name__


# --------------------------------------------------------------------------------------------
# Actions: what the state machine asks a driver to do next
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finish:
    """The wait is over."""

    outcome: WaitOutcome


@dataclass(frozen=True)
class Sleep:
    """Do nothing for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class ReadStatus:
    """Read the run's status (``GET /v1/runs/{id}``), bounded by ``timeout`` seconds."""

    timeout: float


@dataclass(frozen=True)
class AwaitStatus:
    """Wait for the run's status to change (the first time: for its status), as a shared watcher tells,
    for at most ``timeout`` seconds (``inf``: no limit)."""

    timeout: float


@dataclass(frozen=True)
class OpenStream:
    """Open the run's event stream after ``last_event_id``, each read bounded by ``timeout`` seconds
    (a failure to open may show on the first :class:`ReadStream` instead)."""

    last_event_id: str | None
    timeout: float


@dataclass(frozen=True)
class ReadStream:
    """Read the frames of the stream's next chunk (None at its end), within ``timeout`` seconds."""

    timeout: float


WaitAction = Finish | Sleep | ReadStatus | AwaitStatus | OpenStream | ReadStream
#: What performing an action gives: a run object (status reads), frames or None (stream reads), None.
ActionResult = Mapping[str, Any] | list[RunEvent] | None


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def run_signature(run: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a run read while polling worth telling its waiter: its status and the nodes running and
    done (the shared status checks wake a trigger only when this changes)."""
    details = run.get("progress_details")
    nodes: list[Any] = []
    if isinstance(details, Mapping):
        for key in ("running_nodes", "executed_nodes"):
            listed = details.get(key)
            nodes.append(tuple(map(str, listed)) if isinstance(listed, list) else ())
    return (run.get("status"), *nodes)


class RunProgressLogger:
    """Logs a run's progress: one line per change to a known run status and per node start/finish/failure,
    at most :data:`MAX_NODE_LINES_PER_READ` node lines per read (then one line counts the rest). The
    first read logs one line, the status it ends with: a run found already ended (its event stream
    replays its history) is one line, not one per node, so that hundreds of triggers starting at once
    do not flood the triggerer's log channel, which Airflow writes to from the event loop, blocking.

    Fed by status reads (:meth:`on_run`) or event-stream chunks (:meth:`on_events`); streamed tokens
    never produce a line, nor do unknown statuses (:class:`RunWait` warns about those, capped).

    :param log: where to write.
    :param run_id: the run, named in each line.
    """

    _NODE_WORDS = {"running": "started", "completed": "finished", "failed": "failed", "skipped": "skipped"}

    def __init__(self, log: logging.Logger | Any, run_id: str) -> None:
        self._log = log
        self._run_id = run_id
        self._status: str | None = None
        self._progress: Any = None
        self._nodes: dict[str, str] = {}
        self._node_lines_left = MAX_NODE_LINES_PER_READ
        self._nodes_unlogged = 0
        #: Nothing read yet: the first read is summed up in one line.
        self._first_read = True

    def on_run(self, run: Mapping[str, Any]) -> None:
        """One read of a run object: status, progress and the node lists of ``progress_details``."""
        self._read_starts()
        self._take_run(run)
        self._read_ends()

    def on_events(self, events: list[RunEvent]) -> None:
        """One chunk of event-stream frames."""
        self._read_starts()
        for event in events:
            if event.type == "state":
                self._take_run(event.data)
            elif event.type == "content" and event.data.get("id"):
                self._node(str(event.data["id"]), str(event.data.get("status") or "running"))
            if event.workflow_status:
                self.on_status(event.workflow_status)
        self._read_ends()

    def on_status(self, status: Any) -> None:
        """The run's status; a change to a known one is logged (during the first read, once at its end)."""
        if status and isinstance(status, str) and status != self._status and NoxusRunStatus.parse(status):
            self._status = status
            if not self._first_read:
                self._log_status()

    def _log_status(self) -> None:
        self._log.info("Noxus run %s is %s (progress %s).", self._run_id, self._status, self._progress_text())

    def _take_run(self, run: Mapping[str, Any]) -> None:
        progress = run.get("progress")
        if isinstance(progress, (int, float)) and not isinstance(progress, bool):
            self._progress = progress
        details = run.get("progress_details")
        if isinstance(details, Mapping):
            for key, node_status in (("running_nodes", "running"), ("executed_nodes", "completed")):
                nodes = details.get(key)
                for node_id in nodes if isinstance(nodes, list) else ():
                    self._node(str(node_id), node_status)
        self.on_status(run.get("status"))

    def _read_starts(self) -> None:
        self._node_lines_left = MAX_NODE_LINES_PER_READ
        self._nodes_unlogged = 0

    def _read_ends(self) -> None:
        if self._first_read:
            self._first_read = False
            if self._status is not None:
                self._log_status()
            return
        if self._nodes_unlogged:
            self._log.info(
                "Noxus run %s: %d more node changes in this read, not logged one by one (progress %s).",
                self._run_id,
                self._nodes_unlogged,
                self._progress_text(),
            )

    def _node(self, node_id: str, status: str) -> None:
        if self._nodes.get(node_id) == status or (status == "running" and node_id in self._nodes):
            return
        self._nodes[node_id] = status
        if self._first_read:
            return
        if self._node_lines_left <= 0:
            self._nodes_unlogged += 1
            return
        self._node_lines_left -= 1
        word = self._NODE_WORDS.get(status, status)
        self._log.info(
            "Noxus run %s: node %s %s (progress %s).", self._run_id, node_id, word, self._progress_text()
        )

    def _progress_text(self) -> str:
        return f"{self._progress}%" if self._progress is not None else "?%"


# --------------------------------------------------------------------------------------------
# The state machine
# --------------------------------------------------------------------------------------------


class WaitPhase(enum.Enum):
    """Where a :class:`RunWait` is (see its state diagram)."""

    #: Following the event stream, none open: open one (at once, or after a backoff).
    STREAM_CLOSED = "stream_closed"
    #: Following the event stream, one open: read it.
    STREAM_OPEN = "stream_open"
    #: Reading (or awaiting from a watcher) the run's status every poll interval.
    POLLING = "polling"
    #: Over: :attr:`RunWait.outcome` says how.
    DONE = "done"


class RunWait:
    """The wait for one run, without I/O: feed it what happened, ask it what to do next.

    Phases (:class:`WaitPhase`) and what moves between them::

        stream=True                                   stream=False
            |                                              |
            v        OpenStream reported ok                v
        STREAM_CLOSED ---------------------> STREAM_OPEN   POLLING <-+
            ^   |  <--------------------------   |           |       | status read, not final
            |   |   closed, or failed (backoff   |           +-------+
            |   |   unless frames came)          |
            |   +--- 3 failures in a row with no new frame ---> POLLING
            |
        any phase --- final status, refused feedback, an error that will not heal, deadline ---> DONE

    While streaming, the status is also read every :data:`STATUS_CHECK_EVERY_POLL_INTERVALS` poll
    intervals; a status error backs off that read only. :meth:`next_action` only looks; the
    ``report``/``*_read``/``*_failed``/``*_closed`` methods change the state.

    :param run_id: the run.
    :param workflow_id: its workflow (named in messages and the outcome).
    :param options: strategy, poll interval, human-feedback handling.
    :param stream: whether to follow the event stream (:func:`streams`; else poll from the start).
    :param deadline: the time, on ``clock``, at which the wait gives up; None waits without limit.
    :param clock: the current time in seconds (``time.time`` for both drivers: a deadline in epoch
        seconds survives a triggerer's restart).
    :param log: where progress and warnings go.
    :param request_timeout: bound of one status read (the connection's ``timeout``).
    :param max_backoff: cap of the wait after errors (the connection's ``max_backoff``).
    :param last_event_id: resume the event stream after this id.
    :param on_polling: called once when the wait stops streaming (to free a streaming slot).
    :param watched: while polling, ask a watcher to tell when the status changes
        (:class:`AwaitStatus`: the triggerer's shared status checks, which read every run once per poll
        interval) instead of reading it every poll interval (:class:`ReadStatus`).
    """

    def __init__(
        self,
        run_id: str,
        workflow_id: str,
        options: WaitOptions,
        *,
        stream: bool,
        deadline: float | None,
        clock: Callable[[], float],
        log: logging.Logger | Any,
        request_timeout: float,
        max_backoff: float,
        last_event_id: str | None = None,
        on_polling: Callable[[], None] | None = None,
        watched: bool = False,
    ) -> None:
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.options = options
        self.deadline = deadline
        self.last_event_id = last_event_id
        self.run_status: str | None = None
        self.phase = WaitPhase.STREAM_CLOSED if stream else WaitPhase.POLLING
        self._ended: WaitOutcome | None = None
        self._clock = clock
        self._log = log
        self._progress = RunProgressLogger(log, run_id)
        self._request_timeout = request_timeout
        self._stream_idle_timeout = max(request_timeout, STREAM_IDLE_TIMEOUT_S)
        self._backoff = RetryPolicy(
            backoff_initial=options.poll_interval,
            backoff_max=max(options.poll_interval, min(max_backoff, MAX_WAIT_BACKOFF_S)),
        )
        self._watched = watched
        self._on_polling = on_polling
        #: Failures in a row: of the event stream (reset by a new frame), of status reads (by a read).
        self._stream_failures = 0
        self._status_errors = 0
        #: Whether the open stream has sent a new frame (its close then costs no backoff).
        self._stream_progressed = False
        now = clock()
        self._next_status_read = now + self._status_period() if stream else now
        self._reopen_at = now
        self._unknown_statuses: set[str] = set()
        self._said_feedback = False

    # ---- what to do next -----------------------------------------------------------------

    @property
    def outcome(self) -> WaitOutcome | None:
        """The outcome, once the wait is over (the deadline's ``timeout`` as soon as it passes)."""
        if self._ended is None and self._past_deadline():
            return self._make_outcome(
                OUTCOME_TIMEOUT,
                f"Noxus run {self.run_id} of workflow {self.workflow_id} was still "
                f"{self.run_status or 'running'} at the wait's deadline.",
            )
        return self._ended

    def next_action(self) -> WaitAction:
        """What the driver should do now (asking changes nothing)."""
        outcome = self.outcome
        if outcome is not None:
            return Finish(outcome)
        now = self._clock()
        remaining = math.inf if self.deadline is None else self.deadline - now

        if now >= self._next_status_read:
            if self._watched and self.phase is WaitPhase.POLLING:
                return AwaitStatus(remaining)
            return ReadStatus(min(self._request_timeout, remaining))
        if self.phase is WaitPhase.POLLING:
            return Sleep(min(self._next_status_read - now, remaining))
        if self.phase is WaitPhase.STREAM_OPEN:
            return ReadStream(min(self._stream_idle_timeout, remaining))
        if now < self._reopen_at:
            return Sleep(min(self._reopen_at - now, self._next_status_read - now, remaining))
        return OpenStream(self.last_event_id, min(self._stream_idle_timeout, remaining))

    # ---- what happened ---------------------------------------------------------------------

    def report(
        self, action: WaitAction, result: ActionResult = None, error: BaseException | None = None
    ) -> None:
        """What came of performing ``action``: its ``result``, or the ``error`` it raised."""
        if isinstance(action, (ReadStatus, AwaitStatus)):
            if error is not None:
                self.status_failed(error)
            elif isinstance(result, Mapping):
                self.status_read(result)
        elif isinstance(action, OpenStream):
            if error is not None:
                self.stream_failed(error)
            else:
                self.stream_opened()
        elif isinstance(action, ReadStream):
            if error is not None:
                self.stream_failed(error)
            elif result is None:
                self.stream_closed()
            elif isinstance(result, list):
                self.stream_read(result)

    def status_read(self, run: Mapping[str, Any]) -> None:
        """A status read answered with ``run`` (``GET /v1/runs/{id}``, or a page of the run list)."""
        self._status_errors = 0
        self._next_status_read = self._clock() + self._status_period()
        self._progress.on_run(run)
        status = run.get("status")
        if status is None:
            self._warn_unknown(
                "<missing>",
                "Noxus run %s: the server answered without a status; treated as still running.",
            )
            return
        self._judge(status)

    def status_failed(self, error: BaseException) -> None:
        """A status read failed with ``error``."""
        if self._end_on_fatal(error) or self._past_deadline():
            return
        self._status_errors += 1
        self._next_status_read = self._after_backoff(self._status_errors, error, "the status read")

    def stream_opened(self) -> None:
        """The event stream asked for by :class:`OpenStream` is open (or will fail on its first read)."""
        if self.phase is WaitPhase.STREAM_CLOSED:
            self.phase = WaitPhase.STREAM_OPEN
            self._stream_progressed = False

    def stream_read(self, events: list[RunEvent]) -> None:
        """A chunk of the stream arrived with these frames (none for a keep-alive)."""
        self._progress.on_events(events)
        for event in events:
            if event.event_id and event.event_id != self.last_event_id:
                self.last_event_id = event.event_id
                self._stream_progressed = True
                self._stream_failures = 0
            status = event.workflow_status or (event.data.get("status") if event.type == "state" else None)
            if status is not None:
                self._judge(status)
            if self._ended is not None:
                return

    def stream_closed(self) -> None:
        """The server closed the stream before the run's final frame."""
        self._stream_dropped(EOFError("the event stream closed before the run's final frame"))

    def stream_failed(self, error: BaseException) -> None:
        """Opening or reading the stream failed with ``error``; the driver has dropped it."""
        if self._end_on_fatal(error) or self._past_deadline():
            return
        self._stream_dropped(error)

    # ---- decisions -------------------------------------------------------------------------

    def _status_period(self) -> float:
        """Seconds from a status read to the next one: while streaming, the cross-check period."""
        if self.phase is not WaitPhase.POLLING:
            return self.options.poll_interval * STATUS_CHECK_EVERY_POLL_INTERVALS
        return 0.0 if self._watched else self.options.poll_interval

    def _past_deadline(self) -> bool:
        """Whether the deadline has passed (a failure then is the deadline's, not worth a retry)."""
        return self.deadline is not None and self._clock() >= self.deadline

    def _stream_dropped(self, error: BaseException) -> None:
        """The open stream is gone: reopen after its last frame at once if it progressed, else count a
        failure (backoff), and poll after :data:`STREAM_FAILURES_BEFORE_POLLING` in a row."""
        if self.phase is WaitPhase.STREAM_OPEN:
            self.phase = WaitPhase.STREAM_CLOSED
        if self.phase is not WaitPhase.STREAM_CLOSED:
            return
        if self._stream_progressed:
            self._stream_progressed = False
            self._reopen_at = self._clock()
            return
        self._stream_failures += 1
        if self._stream_failures < STREAM_FAILURES_BEFORE_POLLING:
            self._reopen_at = self._after_backoff(self._stream_failures, error, "the event stream")
            return
        self._log.warning(
            "Noxus run %s: the event stream failed %d times in a row (%s); polling every %.1f s now.",
            self.run_id,
            self._stream_failures,
            describe(error),
            self.options.poll_interval,
        )
        self.phase = WaitPhase.POLLING
        self._next_status_read = self._clock()
        if self._on_polling is not None:
            self._on_polling()

    def _after_backoff(self, failures: int, error: BaseException, what: str) -> float:
        """When to try ``what`` again after its ``failures``-th failure in a row (logged)."""
        delay = backoff_seconds(self._backoff, failures, error)
        message = "Noxus run %s: %s failed (%s); trying again in %.1f s."
        self._log.warning(message, self.run_id, what, describe(error), delay)
        return self._clock() + delay

    def _end_on_fatal(self, error: BaseException) -> bool:
        """End the wait with an ``error`` outcome when ``error`` will not heal by waiting."""
        if is_transient(error):
            return False
        self._end(
            error_outcome(
                self.run_id,
                self.workflow_id,
                error,
                run_status=self.run_status,
                last_event_id=self.last_event_id,
            )
        )
        return True

    def _judge(self, value: Any) -> None:
        """Record the run's status; end the wait when it is final (or refused human feedback)."""
        self.run_status = str(value)
        status = NoxusRunStatus.parse(value)
        if status is None:
            self._warn_unknown(
                self.run_status,
                "Noxus run %s reports the unknown status %r; treated as still running.",
                value,
            )
        elif status.is_terminal:
            outcome = OUTCOME_OF_FINAL_STATUS[status]
            self._end(self._make_outcome(outcome, f"Noxus run {self.run_id} ended {status.value}."))
        elif status is NoxusRunStatus.AWAITING_HUMAN_FEEDBACK:
            if self.options.on_human_feedback == "fail":
                self._end(
                    self._make_outcome(
                        OUTCOME_FAILED,
                        f"Noxus run {self.run_id} paused awaiting human feedback and "
                        "on_human_feedback='fail'. Answer it in the Noxus app and use "
                        "on_human_feedback='wait' to wait for the feedback.",
                    )
                )
            elif not self._said_feedback:
                self._said_feedback = True
                self._log.info("Noxus run %s is waiting for human feedback.", self.run_id)

    def _warn_unknown(self, key: str, message: str, *args: Any) -> None:
        """Warn once per unknown (or missing) status, for the first :data:`MAX_UNKNOWN_STATUS_WARNINGS`
        of them; then one line says the rest are not logged."""
        if key in self._unknown_statuses or len(self._unknown_statuses) > MAX_UNKNOWN_STATUS_WARNINGS:
            return
        self._unknown_statuses.add(key)
        if len(self._unknown_statuses) > MAX_UNKNOWN_STATUS_WARNINGS:
            self._log.warning(
                "Noxus run %s keeps reporting statuses this provider does not know; no more are logged "
                "(each is treated as still running).",
                self.run_id,
            )
            return
        self._log.warning(message, self.run_id, *args)

    def _end(self, outcome: WaitOutcome) -> None:
        self._ended = outcome
        self.phase = WaitPhase.DONE

    def _make_outcome(self, status: str, message: str) -> WaitOutcome:
        return WaitOutcome(
            status=status,
            run_id=self.run_id,
            workflow_id=self.workflow_id,
            message=message,
            run_status=self.run_status,
            last_event_id=self.last_event_id,
        )


def judge_run(
    run: Mapping[str, Any], workflow_id: str, options: WaitOptions, log: logging.Logger | Any
) -> WaitOutcome | None:
    """The outcome a wait would reach on seeing ``run`` (a run object already at hand), or None while
    the run goes on."""
    wait = RunWait(
        str(run.get("id")),
        workflow_id,
        options,
        stream=False,
        deadline=None,
        clock=lambda: 0.0,
        log=log,
        request_timeout=0.0,
        max_backoff=0.0,
    )
    wait.status_read(run)
    return wait.outcome


# --------------------------------------------------------------------------------------------
# The drivers
# --------------------------------------------------------------------------------------------

#: Failures of a wait's I/O that the wait judges (anything else is a bug and propagates).
WAIT_IO_ERRORS = (NoxusError, TimeoutError, asyncio.TimeoutError)


class WaitIO(Protocol):
    """The I/O of a blocking wait (:func:`drive`), each call bounded by its ``timeout``."""

    def sleep(self, seconds: float) -> None: ...

    def read_status(self, timeout: float) -> Mapping[str, Any]:
        """``GET /v1/runs/{id}``, sent once."""

    def await_status(self, timeout: float) -> Mapping[str, Any]:
        """The run once its status changed since the last one seen (the first time: at once)."""

    def open_stream(self, last_event_id: str | None, timeout: float) -> None:
        """Start reading the event stream after ``last_event_id`` (closing a previous one)."""

    def read_stream(self, timeout: float) -> list[RunEvent] | None:
        """The frames of the stream's next chunk (none for a keep-alive), or None at its end."""

    def close(self) -> None:
        """Close the stream, if one is open."""


class AsyncWaitIO(Protocol):
    """The I/O of a wait in an event loop (:func:`adrive`): :class:`WaitIO`'s methods as coroutines."""

    async def sleep(self, seconds: float) -> None: ...

    async def read_status(self, timeout: float) -> Mapping[str, Any]: ...

    async def await_status(self, timeout: float) -> Mapping[str, Any]: ...

    async def open_stream(self, last_event_id: str | None, timeout: float) -> None: ...

    async def read_stream(self, timeout: float) -> list[RunEvent] | None: ...

    async def aclose(self) -> None: ...


def drive(wait: RunWait, io: WaitIO) -> WaitOutcome:
    """Run ``wait`` to its end with blocking I/O; the stream is closed on every exit."""
    with contextlib.closing(io):
        while not isinstance(action := wait.next_action(), Finish):
            try:
                result = _perform(action, io)
            except WAIT_IO_ERRORS as error:
                wait.report(action, error=error)
            else:
                wait.report(action, result)
        return action.outcome


async def adrive(wait: RunWait, io: AsyncWaitIO) -> WaitOutcome:
    """Run ``wait`` to its end in an event loop; the stream is closed on every exit, cancellation
    included."""
    async with contextlib.aclosing(io):
        while not isinstance(action := wait.next_action(), Finish):
            try:
                result = await _aperform(action, io)
            except WAIT_IO_ERRORS as error:
                wait.report(action, error=error)
            else:
                wait.report(action, result)
        return action.outcome


def _perform(action: Sleep | ReadStatus | AwaitStatus | OpenStream | ReadStream, io: WaitIO) -> ActionResult:
    if isinstance(action, Sleep):
        io.sleep(action.seconds)
        return None
    if isinstance(action, ReadStatus):
        return io.read_status(action.timeout)
    if isinstance(action, AwaitStatus):
        return io.await_status(action.timeout)
    if isinstance(action, OpenStream):
        io.open_stream(action.last_event_id, action.timeout)
        return None
    return io.read_stream(action.timeout)


async def _aperform(
    action: Sleep | ReadStatus | AwaitStatus | OpenStream | ReadStream, io: AsyncWaitIO
) -> ActionResult:
    if isinstance(action, Sleep):
        await io.sleep(action.seconds)
        return None
    if isinstance(action, ReadStatus):
        return await io.read_status(action.timeout)
    if isinstance(action, AwaitStatus):
        return await io.await_status(action.timeout)
    if isinstance(action, OpenStream):
        await io.open_stream(action.last_event_id, action.timeout)
        return None
    return await io.read_stream(action.timeout)


__all__ = [
    "DEFAULT_POLL_INTERVAL_S",
    "HUMAN_FEEDBACK_ACTIONS",
    "WAIT_STRATEGIES",
    "AsyncWaitIO",
    "RunProgressLogger",
    "RunWait",
    "WaitIO",
    "WaitOptions",
    "WaitOutcome",
    "WaitPhase",
    "WaitStrategy",
    "adrive",
    "check_timeout",
    "drive",
    "error_outcome",
    "judge_run",
    "run_signature",
    "streams",
]
