"""The wait's state machine (airflow_provider_noxus.wait.RunWait), rule by rule, without sockets.

A fake clock and a recording logger drive it; each test feeds what happened and checks what it asks
for next. The drivers over HTTP are in tests/test_wait_drivers.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusConfigurationError,
    NoxusNotFoundError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusRunError,
    NoxusServerError,
    NoxusTimeoutError,
    NoxusTLSError,
    NoxusTransportError,
)
from airflow_provider_noxus.protocol import RunEvent
from airflow_provider_noxus.wait import (
    MAX_NODE_LINES_PER_READ,
    MAX_UNKNOWN_STATUS_WARNINGS,
    STATUS_CHECK_EVERY_POLL_INTERVALS,
    STREAM_FAILURES_BEFORE_POLLING,
    AwaitStatus,
    Finish,
    OpenStream,
    ReadStatus,
    ReadStream,
    RunWait,
    Sleep,
    WaitOptions,
    WaitOutcome,
    WaitPhase,
    judge_run,
    streams,
)

POLL = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """Records ``(level, message % args)``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda message, *args: self.lines.append((level, message % args))

    def count(self, level: str, text: str) -> int:
        return sum(1 for line_level, line in self.lines if line_level == level and text in line)


def make_wait(
    clock: Clock,
    log: Log,
    *,
    stream: bool = False,
    deadline: float | None = None,
    on_human_feedback: str = "wait",
    **kwargs: Any,
) -> RunWait:
    options = WaitOptions(
        strategy="stream" if stream else "poll", poll_interval=POLL, on_human_feedback=on_human_feedback
    )
    return RunWait(
        "run-1",
        "wf-1",
        options,
        stream=stream,
        deadline=deadline,
        clock=clock,
        log=log,
        request_timeout=30.0,
        max_backoff=30.0,
        **kwargs,
    )


def frame(event_id: str, *, status: str | None = None, final: str | None = None) -> RunEvent:
    data: dict[str, Any] = {"status": status} if status else {}
    if final:
        data["workflow_status"] = final
    return RunEvent(type="state", data=data, event_id=event_id)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log() -> Log:
    return Log()


# ---- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"strategy": "webhook"}, "wait_strategy"),
        ({"on_human_feedback": "ignore"}, "on_human_feedback"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"poll_interval": math.nan}, "poll_interval"),
        ({"poll_interval": math.inf}, "poll_interval"),
        ({"poll_interval": "5"}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
    ],
)
def test_bad_options_are_refused_when_built(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(NoxusConfigurationError, match=named):
        WaitOptions(**kwargs)


# ---- polling -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"), [("completed", "success"), ("failed", "failed"), ("stopped", "stopped")]
)
def test_a_final_status_ends_the_wait(clock: Clock, log: Log, status: str, outcome: str) -> None:
    wait = make_wait(clock, log)
    assert wait.next_action() == ReadStatus(30.0)
    wait.status_read({"id": "run-1", "status": status})
    action = wait.next_action()
    assert isinstance(action, Finish)
    assert (action.outcome.status, action.outcome.run_status) == (outcome, status)


def test_a_running_status_waits_one_poll_interval(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log)
    wait.next_action()
    wait.status_read({"status": "running"})
    assert wait.next_action() == Sleep(POLL)
    clock.now += POLL
    assert wait.next_action() == ReadStatus(30.0)


def test_unknown_and_missing_statuses_are_still_running_with_one_warning_each(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log)
    for answer in ({"status": "paused_by_admin"}, {"status": "paused_by_admin"}, {}, {"status": None}):
        wait.status_read(answer)
        assert not isinstance(wait.next_action(), Finish)
    assert log.count("warning", "unknown status 'paused_by_admin'") == 1
    assert log.count("warning", "without a status") == 1


@pytest.mark.parametrize(
    "error",
    [
        NoxusServerError("down", status_code=503),
        NoxusRateLimitedError("slow down", status_code=429, retry_after=0.0),
        NoxusTransportError("reset"),
        NoxusTimeoutError("slow"),
        NoxusProtocolError("not json"),
        TimeoutError(),
    ],
    ids=["503", "429", "reset", "timeout", "not-json", "bound"],
)
def test_transient_errors_back_off_and_never_end_the_wait(
    clock: Clock, log: Log, error: BaseException
) -> None:
    wait = make_wait(clock, log)
    delays = []
    for _ in range(12):  # far longer than any transport retry budget
        assert isinstance(wait.next_action(), ReadStatus)
        wait.status_failed(error)
        action = wait.next_action()
        assert isinstance(action, Sleep)
        delays.append(action.seconds)
        clock.now += action.seconds
    assert min(delays) >= POLL / 2, "a refusal must never shorten the wait below the backoff floor"
    assert max(delays) <= 30.0
    wait.status_read({"status": "completed"})
    assert wait.next_action().outcome.status == "success"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "error",
    [
        NoxusAuthError("refused", status_code=401),
        NoxusNotFoundError("no such run", status_code=404),
        NoxusTLSError("certificate verify failed"),
        NoxusConfigurationError("bad"),
    ],
    ids=["401", "404", "tls", "config"],
)
def test_errors_that_do_not_heal_end_the_wait_with_their_class(
    clock: Clock, log: Log, error: BaseException
) -> None:
    wait = make_wait(clock, log)
    wait.status_failed(error)
    outcome = wait.next_action().outcome  # type: ignore[union-attr]
    assert (outcome.status, outcome.error_type, outcome.error) == ("error", type(error).__name__, error)
    with pytest.raises(type(error)):
        raise outcome.as_error()


def test_the_error_class_survives_the_trigger_event() -> None:
    event = WaitOutcome("error", "run-1", "wf-1", "refused", error_type="NoxusAuthError").to_event()
    with pytest.raises(NoxusAuthError, match="refused"):
        raise WaitOutcome.from_event(event).as_error()
    unknown = WaitOutcome("error", "run-1", "wf-1", "odd", error_type="ValueError").to_event()
    with pytest.raises(NoxusRunError, match="odd"):
        raise WaitOutcome.from_event(unknown).as_error()


# ---- deadline ------------------------------------------------------------------------------------


def test_deadline_bounds_every_step_and_ends_with_timeout(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, deadline=clock.now + 3.0)
    assert wait.next_action() == ReadStatus(3.0)
    wait.status_read({"status": "running"})
    clock.now += 1.5
    assert wait.next_action() == Sleep(0.5)
    clock.now += 0.5
    assert wait.next_action() == ReadStatus(1.0)
    clock.now += 1.0
    wait.status_failed(NoxusServerError("down", status_code=503))
    outcome = wait.next_action().outcome  # type: ignore[union-attr]
    assert (outcome.status, outcome.run_status) == ("timeout", "running")
    assert log.count("warning", "trying again") == 0, "a failure at the deadline is not retried"


# ---- human feedback ------------------------------------------------------------------------------


def test_human_feedback_is_waited_through_with_one_line(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log)
    for _ in range(3):
        wait.status_read({"status": "awaiting_human_feedback"})
    assert isinstance(wait.next_action(), Sleep)
    assert log.count("info", "waiting for human feedback") == 1


def test_human_feedback_fails_the_wait_when_asked(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, on_human_feedback="fail")
    wait.status_read({"status": "awaiting_human_feedback"})
    outcome = wait.next_action().outcome  # type: ignore[union-attr]
    assert outcome.status == "failed" and outcome.refused_feedback
    assert "on_human_feedback='fail'" in outcome.message


def test_judge_run_needs_no_io(log: Log) -> None:
    options = WaitOptions()
    assert judge_run({"id": "r", "status": "running"}, "wf", options, log) is None
    assert judge_run({"id": "r", "status": "completed"}, "wf", options, log).status == "success"  # type: ignore[union-attr]


# ---- streaming -----------------------------------------------------------------------------------


def test_stream_frames_log_progress_and_the_final_frame_ends_it(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, stream=True)
    assert wait.next_action() == OpenStream(None, 45.0)
    assert wait.next_action() == OpenStream(None, 45.0), "asking again changes nothing"
    wait.report(OpenStream(None, 45.0))
    assert wait.phase is WaitPhase.STREAM_OPEN
    assert wait.next_action() == ReadStream(45.0)
    node_started = RunEvent("content", {"id": "n1", "status": "running"}, "1-1")
    wait.stream_read([frame("1-0", status="running")])
    wait.stream_read([node_started])
    wait.stream_read([])  # a keep-alive
    assert wait.next_action() == ReadStream(45.0)
    wait.stream_read([frame("1-2", final="completed")])
    outcome = wait.next_action().outcome  # type: ignore[union-attr]
    assert (outcome.status, outcome.last_event_id) == ("success", "1-2")
    assert log.count("info", "node n1 started") == 1


def test_a_stream_closed_after_progress_reopens_at_once_after_its_last_event(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, stream=True, last_event_id="0-9")
    assert wait.next_action() == OpenStream("0-9", 45.0)
    wait.stream_opened()
    wait.stream_read([frame("1-0", status="running")])
    wait.stream_closed()
    assert wait.next_action() == OpenStream("1-0", 45.0)


def test_stream_failures_back_off_then_fall_back_to_polling(clock: Clock, log: Log) -> None:
    released = []
    wait = make_wait(clock, log, stream=True, on_polling=lambda: released.append(True))
    for failure in range(1, STREAM_FAILURES_BEFORE_POLLING + 1):
        assert isinstance(wait.next_action(), OpenStream)
        if failure % 2:
            wait.stream_failed(NoxusServerError("bad gateway", status_code=502))
        else:
            wait.stream_closed()
        if failure < STREAM_FAILURES_BEFORE_POLLING:
            action = wait.next_action()
            assert isinstance(action, Sleep) and action.seconds >= POLL / 2
            clock.now += action.seconds
    assert wait.phase is WaitPhase.POLLING and released == [True]
    assert wait.next_action() == ReadStatus(30.0)
    assert log.count("warning", "polling every 2.0 s now") == 1


def test_a_fatal_stream_error_ends_the_wait(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, stream=True)
    wait.next_action()
    wait.stream_failed(NoxusNotFoundError("no such run", status_code=404))
    assert wait.next_action().outcome.status == "error"  # type: ignore[union-attr]


def test_an_open_but_silent_stream_is_cross_checked_by_status(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, stream=True)
    wait.report(wait.next_action())
    every = POLL * STATUS_CHECK_EVERY_POLL_INTERVALS
    clock.now += every - 0.1
    wait.stream_read([])  # keep-alive
    assert isinstance(wait.next_action(), ReadStream)
    clock.now += 0.1
    wait.stream_read([])
    assert wait.next_action() == ReadStatus(30.0), "the stream never said the run ended: ask"
    wait.status_read({"status": "running"})
    assert isinstance(wait.next_action(), ReadStream), "the stream stays open after a check"
    clock.now += every
    wait.stream_read([])
    wait.next_action()
    wait.status_read({"status": "completed"})
    assert wait.next_action().outcome.status == "success"  # type: ignore[union-attr]


def test_a_watched_wait_is_told_of_changes_instead_of_reading_each_interval(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, watched=True)
    assert wait.next_action() == AwaitStatus(math.inf), "no deadline: wait for the change as long as it takes"
    wait.status_read({"status": "running"})
    assert wait.next_action() == AwaitStatus(math.inf), "at once: the watcher paces the checks"
    wait.status_failed(NoxusServerError("down", status_code=503))
    assert isinstance(wait.next_action(), Sleep), "errors still back off"
    bounded = make_wait(clock, log, watched=True, deadline=clock.now + 7.0)
    assert bounded.next_action() == AwaitStatus(7.0)
    streaming = make_wait(clock, log, watched=True, stream=True)
    streaming.next_action()
    clock.now += POLL * STATUS_CHECK_EVERY_POLL_INTERVALS
    streaming.stream_read([])
    assert streaming.next_action() == ReadStatus(30.0), "a stream's cross-check is a read of its own"


# ---- phases, the stream rule, log floods ---------------------------------------------------------


def test_asking_what_next_changes_nothing_and_the_deadline_shows_at_once(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, stream=True, deadline=clock.now + 10)
    assert wait.phase is WaitPhase.STREAM_CLOSED
    assert [wait.next_action() for _ in range(3)] == [OpenStream(None, 10.0)] * 3
    assert wait.phase is WaitPhase.STREAM_CLOSED and wait.outcome is None
    clock.now += 10
    assert wait.outcome is not None and wait.outcome.status == "timeout"
    assert wait.next_action() == Finish(wait.outcome)


def test_phases_follow_the_state_diagram(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log, stream=True)
    wait.report(wait.next_action())
    assert wait.phase is WaitPhase.STREAM_OPEN
    wait.report(ReadStream(45.0), None)  # the server closed it, no new frame: a failure
    assert wait.phase is WaitPhase.STREAM_CLOSED
    wait.report(ReadStream(45.0), [frame("1-0", final="completed")])
    assert wait.phase is WaitPhase.DONE and wait.outcome.status == "success"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("strategy", "room", "streams_"),
    [("stream", False, True), ("auto", True, True), ("auto", False, False), ("poll", True, False)],
)
def test_one_rule_says_whether_a_wait_streams(strategy: str, room: bool, streams_: bool) -> None:
    assert streams(strategy, room=room) is streams_


@pytest.mark.parametrize("stream", [True, False])
def test_the_first_read_of_a_run_that_already_ended_is_one_line_not_its_history(
    clock: Clock, log: Log, stream: bool
) -> None:
    # Hundreds of triggers starting on ended runs at once: each logs one line for what it found (Airflow
    # writes trigger logs from the event loop, blocking), then the changes it sees after.
    wait = make_wait(clock, log, stream=stream)
    nodes = [f"n{index}" for index in range(30)]
    if stream:
        history = [frame("1-0", status="queued"), frame("1-1", status="running")]
        history += [RunEvent("content", {"id": node, "status": "completed"}, f"1-{n + 2}") for n, node in
                    enumerate(nodes)]  # fmt: skip
        wait.stream_read([*history, frame("1-99", final="completed")])
    else:
        details = {"executed_nodes": nodes, "running_nodes": []}
        wait.status_read({"status": "completed", "progress": 100, "progress_details": details})
    assert [line for _, line in log.lines] == [
        f"Noxus run run-1 is completed (progress {'?' if stream else 100}%)."
    ]


def test_a_first_read_without_a_known_status_logs_nothing_and_the_next_logs_its_changes(
    clock: Clock, log: Log
) -> None:
    wait = make_wait(clock, log)
    wait.status_read({"progress_details": {"running_nodes": ["a"]}})
    assert [line for level, line in log.lines if level == "info"] == []
    wait.status_read({"status": "running", "progress_details": {"running_nodes": ["a", "b"]}})
    assert log.count("info", "node b started") == 1 and log.count("info", "node a") == 0
    assert log.count("info", "is running") == 1


def test_a_new_unknown_status_on_every_read_logs_a_bounded_number_of_lines(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log)
    for read in range(1000):
        wait.status_read({"status": f"weird_{read}"})
    assert wait.outcome is None, "still running"
    assert len(log.lines) == MAX_UNKNOWN_STATUS_WARNINGS + 1
    assert log.count("warning", "no more are logged") == 1


def test_a_read_listing_thousands_of_new_nodes_logs_a_bounded_number_of_lines(clock: Clock, log: Log) -> None:
    wait = make_wait(clock, log)
    wait.status_read({"status": "queued"})
    nodes = [f"n{index}" for index in range(20_000)]
    wait.status_read({"status": "running", "progress_details": {"running_nodes": nodes}})
    assert log.count("info", "started") == MAX_NODE_LINES_PER_READ
    assert log.count("info", "19980 more node changes") == 1
    assert len(log.lines) == MAX_NODE_LINES_PER_READ + 3  # and the two status lines
    frames = [
        RunEvent("content", {"id": f"m{index}", "status": "completed"}, f"2-{index}") for index in range(500)
    ]
    stream = make_wait(clock, log, stream=True)
    stream.stream_read([frame("2-x", status="running")])
    before = len(log.lines)
    stream.stream_read(frames)
    assert len(log.lines) - before == MAX_NODE_LINES_PER_READ + 1, "a stream chunk is one read"
