"""What a wait's outcome means for a task: its result or its error, written once for the worker and the
triggerer.

:func:`task_result` turns a :class:`~airflow_provider_noxus.wait.WaitOutcome` into the task's return
value (the run's output) or raises the error that says why there is none. It is I/O-free: it yields
the steps it needs (:class:`StopRun`, :class:`ReadRun`, :class:`Pause`) and is driven by
:func:`run_steps` on a worker (the operator's and sensor's ``complete``, the hook's ``wait_for_run``)
and by :func:`arun_steps` in the triggerer (a task that ends there, ``end_from_trigger=True``).

The rules, each once:

- the output is taken only from a read that says the run's final status; a read that disagrees (an
  output endpoint lagging behind the status one) is read again, :data:`OUTPUT_READ_DELAYS_S` apart,
  and the task fails clearly if the reads never agree (:func:`final_run`);
- a wait past its deadline, or refused human feedback, stops the run when the task may stop it;
- a failed or stopped run fails the task with the run's own error;
- the output is at most ``max_output_bytes`` of JSON, and passes the task's output check if it has one;
- every error names the workflow, the run and its link (:func:`outcome_error`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_provider_noxus.exceptions import (
    NoxusError,
    NoxusOutputTooLargeError,
    NoxusRunError,
    NoxusRunTimeoutError,
    shorten,
)
from airflow_provider_noxus.protocol import NoxusRunStatus
from airflow_provider_noxus.wait import OUTCOME_ERROR, OUTCOME_SUCCESS, OUTCOME_TIMEOUT, WaitOutcome

#: Pauses between reads of a run whose output read does not yet say the final status its status read
#: said (five reads over 7.5 s): replicas and caches catch up within that, a broken server does not.
OUTPUT_READ_DELAYS_S = (0.5, 1.0, 2.0, 4.0)

T = TypeVar("T")


@dataclass(frozen=True)
class StopRun:
    """Ask Noxus to stop the run (best effort: the driver logs a failure, never raises it)."""

    reason: str


@dataclass(frozen=True)
class ReadRun:
    """Read the run with its output (``GET /v1/workflows/{workflow_id}/runs/{run_id}``)."""


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before the next step."""

    seconds: float


ResultStep = StopRun | ReadRun | Pause
#: A task result being worked out: yields steps, is sent each step's result, returns the output.
ResultSteps = Generator[ResultStep, Any, T]


@dataclass(frozen=True)
class ResultRules:
    """What a task expects of its run's end.

    :param run_url: the run's link, named in every error.
    :param limits: the wait's limits in words (``timeout=60 s, execution_timeout=...``), for a timeout.
    :param may_stop: whether the task may stop the run (on timeout or refused feedback).
    :param max_output_bytes: largest output (JSON) returned; None for no limit.
    :param noxus_conn_id: the connection, named in the size guard's advice.
    :param check_output: the task's check of the output (returns it, JSON-safe, or raises).
    """

    run_url: str
    limits: str
    may_stop: bool
    max_output_bytes: int | None = None
    noxus_conn_id: str = "noxus_default"
    check_output: Callable[[Any], Any] | None = None


def run_error_message(run: Mapping[str, Any]) -> str | None:
    """The run's own error text: ``output["error"]``, else the last entry of ``run_logs``."""
    output = run.get("output")
    if isinstance(output, Mapping) and output.get("error"):
        return shorten(str(output["error"]))
    details = run.get("progress_details")
    logs = details.get("run_logs") if isinstance(details, Mapping) else None
    if logs:
        last = list(logs.values())[-1] if isinstance(logs, Mapping) else logs
        return shorten(str(last[-1] if isinstance(last, list) and last else last))
    return None


def outcome_error(
    outcome: WaitOutcome,
    *,
    run_url: str,
    limits: str,
    stop_note: str,
    run: Mapping[str, Any] | None = None,
) -> NoxusError | None:
    """The error a wait that ended with ``outcome`` means, or None for a completed run.

    :param run_url: the run's link.
    :param limits: the wait's limits in words, for a timeout.
    :param stop_note: what became of a run left unfinished (``it was asked to stop``...).
    :param run: the run as last read, for a failed or stopped run's own error.
    """
    if outcome.status == OUTCOME_ERROR:
        return outcome.as_error()
    about: dict[str, Any] = {
        "status": outcome.run_status,
        "workflow_id": outcome.workflow_id,
        "run_id": outcome.run_id,
        "run_url": run_url,
    }
    if outcome.status == OUTCOME_TIMEOUT:
        return NoxusRunTimeoutError(
            f"The Noxus run was still {outcome.run_status or 'running'} at the wait's deadline ({limits}); "
            f"{stop_note}.",
            **about,
        )
    if outcome.refused_feedback:
        return NoxusRunError(
            f"The Noxus run paused awaiting human feedback and on_human_feedback='fail'; {stop_note}. "
            "Set on_human_feedback='wait' to wait for the feedback instead.",
            **about,
        )
    if outcome.status != OUTCOME_SUCCESS:
        reason = (run_error_message(run) if run is not None else None) or "the run gave no error message"
        return NoxusRunError(f"Noxus run ended {outcome.run_status}: {reason}.", **about)
    return None


def final_run(
    outcome: WaitOutcome, run_url: str, run: Mapping[str, Any] | None = None
) -> ResultSteps[Mapping[str, Any]]:
    """The run with its output, from a read that says the final status ``outcome`` saw.

    :param run: the run with its output, when already read (used when it says that status).
    :raises NoxusRunError: when no read agreed within :data:`OUTPUT_READ_DELAYS_S`.
    """
    expected = NoxusRunStatus.parse(outcome.run_status)
    seen: list[str] = []
    for delay in (0.0, *OUTPUT_READ_DELAYS_S):
        if run is None or "output" not in run:
            if delay:
                yield Pause(delay)
            run = yield ReadRun()
            assert run is not None
        if NoxusRunStatus.parse(run.get("status")) is expected:
            return run
        seen.append(str(run.get("status")))
        run = None
    raise NoxusRunError(
        f"The Noxus run's status read says {outcome.run_status}, but {len(seen)} reads of its output over "
        f"{sum(OUTPUT_READ_DELAYS_S):g} s said {', '.join(seen)}: no output was taken from a run that was "
        "not final. The Noxus API's endpoints disagree; retry the task, or report it to Noxus if it lasts.",
        status=outcome.run_status,
        workflow_id=outcome.workflow_id,
        run_id=outcome.run_id,
        run_url=run_url,
    )


def task_result(
    outcome: WaitOutcome, rules: ResultRules, run: Mapping[str, Any] | None = None
) -> ResultSteps[Any]:
    """The task's return value for a wait that ended with ``outcome``: the output of a completed run;
    else the error that says why there is none, after stopping an unfinished run the task may stop.

    :param run: the run with its output, when already read.
    """
    if not outcome.run_ended and outcome.status != OUTCOME_ERROR and rules.may_stop:
        reason = "wait deadline passed" if outcome.status == OUTCOME_TIMEOUT else "refused human feedback"
        yield StopRun(reason)
    stop_note = "it was asked to stop" if rules.may_stop else "it was left running"
    if outcome.run_ended:
        run = yield from final_run(outcome, rules.run_url, run)
    error = outcome_error(outcome, run_url=rules.run_url, limits=rules.limits, stop_note=stop_note, run=run)
    if error is not None:
        raise error
    assert run is not None
    output = run.get("output") or {}
    size = len(json.dumps(output, default=str).encode())
    if rules.max_output_bytes is not None and size > rules.max_output_bytes:
        raise NoxusOutputTooLargeError(
            f"The output of the Noxus run is {size} bytes, over max_output_bytes={rules.max_output_bytes}. "
            "Raise max_output_bytes, limit the outputs with node_ids, or run with wait_for_completion=False "
            f"and read the output where it is needed with NoxusHook({rules.noxus_conn_id!r})"
            ".get_run(workflow_id, run_id).",
            status=outcome.run_status,
            workflow_id=outcome.workflow_id,
            run_id=outcome.run_id,
            run_url=rules.run_url,
        )
    return output if rules.check_output is None else rules.check_output(output)


def run_steps(steps: ResultSteps[T], perform: Callable[[ResultStep], Any]) -> T:
    """Drive ``steps`` with blocking I/O: ``perform(step)`` is sent back as the step's result."""
    result: Any = None
    try:
        while True:
            result = perform(steps.send(result))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun_steps(steps: ResultSteps[T], perform: Callable[[ResultStep], Awaitable[Any]]) -> T:
    """Drive ``steps`` in an event loop: ``await perform(step)`` is sent back as the step's result."""
    result: Any = None
    try:
        while True:
            result = await perform(steps.send(result))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


__all__ = [
    "OUTPUT_READ_DELAYS_S",
    "Pause",
    "ReadRun",
    "ResultRules",
    "StopRun",
    "arun_steps",
    "final_run",
    "outcome_error",
    "run_error_message",
    "run_steps",
    "task_result",
]
