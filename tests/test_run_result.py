"""What a wait's outcome means for a task (airflow_provider_noxus.run_result), without sockets or Airflow.

The result is worked out by a generator of steps; these tests drive it with a scripted ``perform``
that records each step and answers reads from a list, the way the worker and the trigger drive it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from airflow_provider_noxus.exceptions import (
    NoxusAuthError,
    NoxusOutputTooLargeError,
    NoxusRunError,
    NoxusRunTimeoutError,
)
from airflow_provider_noxus.run_result import (
    OUTPUT_READ_DELAYS_S,
    Pause,
    ReadRun,
    ResultRules,
    StopRun,
    outcome_error,
    run_steps,
    task_result,
)
from airflow_provider_noxus.wait import WaitOutcome, error_outcome

URL = "https://app.example/workflows/wf-1/runs/run-1"


def rules(**overrides: Any) -> ResultRules:
    return ResultRules(**{"run_url": URL, "limits": "timeout=60 s", "may_stop": True, **overrides})


def outcome(status: str, run_status: str | None) -> WaitOutcome:
    return WaitOutcome(status, "run-1", "wf-1", "msg", run_status=run_status)


class Script:
    """Answers each :class:`ReadRun` with the next run of ``reads``; records every step."""

    def __init__(self, *reads: Mapping[str, Any]) -> None:
        self.reads = list(reads)
        self.steps: list[Any] = []

    def __call__(self, step: Any) -> Any:
        self.steps.append(step)
        return self.reads.pop(0) if isinstance(step, ReadRun) else None


def run(status: str, output: Any = None) -> dict[str, Any]:
    return {"id": "run-1", "status": status, "output": {} if output is None else output}


def test_a_completed_run_returns_the_output_of_a_read_that_says_completed() -> None:
    script = Script(run("completed", {"text": "hi"}))
    assert run_steps(task_result(outcome("success", "completed"), rules()), script) == {"text": "hi"}
    assert script.steps == [ReadRun()]


def test_a_read_that_lags_behind_the_status_is_read_again_after_a_pause() -> None:
    script = Script(run("running"), run("failed", {"error": "stale"}), run("completed", {"text": "hi"}))
    assert run_steps(task_result(outcome("success", "completed"), rules()), script) == {"text": "hi"}
    assert script.steps == [ReadRun(), Pause(0.5), ReadRun(), Pause(1.0), ReadRun()]


def test_reads_that_never_agree_fail_after_a_bounded_number() -> None:
    script = Script(*[run("running")] * 10)
    with pytest.raises(NoxusRunError, match="5 reads of its output") as raised:
        run_steps(task_result(outcome("success", "completed"), rules()), script)
    assert sum(isinstance(step, ReadRun) for step in script.steps) == len(OUTPUT_READ_DELAYS_S) + 1
    assert (
        "workflow wf-1" in str(raised.value) and "run run-1" in str(raised.value) and URL in str(raised.value)
    )


def test_a_run_at_hand_that_says_the_final_status_is_not_read_again() -> None:
    script = Script()
    result = task_result(outcome("success", "completed"), rules(), run("completed", {"a": 1}))
    assert run_steps(result, script) == {"a": 1} and script.steps == []


def test_a_failed_run_fails_with_its_own_error_from_a_read_that_says_failed() -> None:
    script = Script(run("running"), run("failed", {"error": "model exploded"}))
    with pytest.raises(NoxusRunError, match="ended failed: model exploded") as raised:
        run_steps(task_result(outcome("failed", "failed"), rules()), script)
    assert URL in str(raised.value)


@pytest.mark.parametrize(("may_stop", "note"), [(True, "asked to stop"), (False, "left running")])
def test_a_timeout_stops_the_run_only_when_the_task_may(may_stop: bool, note: str) -> None:
    script = Script()
    with pytest.raises(NoxusRunTimeoutError, match=note) as raised:
        run_steps(task_result(outcome("timeout", "running"), rules(may_stop=may_stop)), script)
    assert script.steps == ([StopRun("wait deadline passed")] if may_stop else [])
    assert "timeout=60 s" in str(raised.value)


def test_refused_feedback_stops_the_run_and_fails() -> None:
    script = Script()
    with pytest.raises(NoxusRunError, match="on_human_feedback='fail'; it was asked to stop"):
        run_steps(task_result(outcome("failed", "awaiting_human_feedback"), rules()), script)
    assert script.steps == [StopRun("refused human feedback")]


def test_an_error_outcome_raises_its_own_class_and_stops_nothing() -> None:
    failed = error_outcome("run-1", "wf-1", NoxusAuthError("refused", status_code=401))
    script = Script()
    with pytest.raises(NoxusAuthError):
        run_steps(task_result(failed, rules()), script)
    assert script.steps == []
    from_event = WaitOutcome.from_event(failed.to_event())
    assert isinstance(outcome_error(from_event, run_url=URL, limits="", stop_note=""), NoxusAuthError)


def test_an_output_over_the_limit_fails_without_retries_and_says_what_to_do() -> None:
    script = Script(run("completed", {"text": "x" * 100}))
    with pytest.raises(NoxusOutputTooLargeError, match="max_output_bytes=50"):
        run_steps(task_result(outcome("success", "completed"), rules(max_output_bytes=50)), script)


def test_the_output_check_sees_the_output_and_its_answer_is_the_result() -> None:
    script = Script(run("completed", {"n": "1"}))
    checked = rules(check_output=lambda output: {"n": int(output["n"])})
    assert run_steps(task_result(outcome("success", "completed"), checked), script) == {"n": 1}
