"""What the operator and the sensor share: waiting for a run from a task, and what its end means.

A task waits either deferred (:class:`~airflow_provider_noxus.triggers.noxus.NoxusRunTrigger` in the
triggerer) or blocking on the worker (:meth:`~airflow_provider_noxus.hooks.noxus.NoxusHook.wait`); both
run the same wait and end with a :class:`~airflow_provider_noxus.wait.WaitOutcome`, which
:meth:`NoxusRunWaitMixin.complete` turns into the task's result or its error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus.exceptions import (
    NoxusOutputTooLargeError,
    NoxusRunError,
    NoxusRunTimeoutError,
    shorten,
)
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.links.noxus import XCOM_RUN_ID_KEY, XCOM_RUN_URL_KEY
from airflow_provider_noxus.outputs import validate_output
from airflow_provider_noxus.protocol import RetryPolicy
from airflow_provider_noxus.wait import (
    OUTCOME_ERROR,
    OUTCOME_SUCCESS,
    OUTCOME_TIMEOUT,
    WaitOptions,
    WaitOutcome,
    judge_run,
)

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
#: The wait ends this long (at most) before ``execution_timeout``, so the run can be stopped first.
EXECUTION_TIMEOUT_MARGIN_S = 10.0
#: Extra time given to Airflow's own deferral timeout beyond the trigger's deadline (a safety net).
DEFERRAL_TIMEOUT_GRACE_S = 60.0
#: Retries of the best-effort stop sent when a task is killed, timed out or refused feedback.
STOP_RETRY_POLICY = RetryPolicy(max_attempts=2, backoff_initial=0.5, backoff_max=2.0, total_budget=15.0)


def seconds(value: float | timedelta | None) -> float | None:
    """A duration given as seconds or a ``timedelta``, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else value


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


class NoxusRunWaitMixin:
    """Waiting for a Noxus run from a task: the deadline, deferring or blocking, and the outcome.

    Expects ``noxus_conn_id``, ``workflow_id``, ``wait_options`` (:class:`WaitOptions`),
    ``deferrable``, ``max_output_bytes``, ``timeout`` (seconds or None), ``execution_timeout`` and
    ``cancel_on_kill`` attributes, and Airflow's ``log`` and ``defer``.
    """

    #: Whether this task owns the run: it stops the run on timeout, kill and refused feedback.
    owns_run: bool = True
    #: The pydantic model a completed run's output is validated against (:mod:`..outputs`), if any.
    output_model: Any = None

    if TYPE_CHECKING:
        noxus_conn_id: str
        workflow_id: str
        wait_options: WaitOptions
        deferrable: bool
        max_output_bytes: int
        timeout: Any
        execution_timeout: timedelta | None
        cancel_on_kill: bool
        log: Any

        def defer(self, **kwargs: Any) -> Any: ...

    @cached_property
    def hook(self) -> NoxusHook:
        return NoxusHook(self.noxus_conn_id)

    def run_url(self, run_id: str) -> str:
        return self.hook.run_url(self.workflow_id, run_id)

    def push_run_link(self, context: Context, run_id: str) -> None:
        """Put the run's id and link in XCom (the task's "Noxus run" button) and in the log."""
        ti = context["ti"]
        ti.xcom_push(key=XCOM_RUN_ID_KEY, value=run_id)
        ti.xcom_push(key=XCOM_RUN_URL_KEY, value=self.run_url(run_id))
        self.log.info("Noxus run %s of workflow %s: %s", run_id, self.workflow_id, self.run_url(run_id))

    def wait_deadline(self, context: Context) -> float | None:
        """Epoch seconds at which the wait gives up: ``timeout`` from now, and a little before
        ``execution_timeout`` runs out (counted from the task's start)."""
        now = time.time()
        limits = []
        timeout = seconds(self.timeout)
        if timeout is not None:
            limits.append(now + timeout)
        if self.execution_timeout:
            started = getattr(context.get("ti"), "start_date", None)
            start = started.timestamp() if started else now
            total = self.execution_timeout.total_seconds()
            limits.append(start + total - min(EXECUTION_TIMEOUT_MARGIN_S, total / 10))
        return min(limits) if limits else None

    # ---- the wait ------------------------------------------------------------------------

    def wait_for(self, context: Context, run: Mapping[str, Any]) -> Any:
        """Wait for ``run`` to end (deferred or blocking) and return the task's result; a run already at
        its end is not waited on."""
        run_id = str(run["id"])
        outcome = judge_run(run, self.workflow_id, self.wait_options, self.log)
        if outcome is not None:
            return self.complete(context, outcome, run if "output" in run else None)
        deadline = self.wait_deadline(context)
        if self.deferrable:
            # Imported here: a DAG file (and a task that does not defer) need not load the trigger.
            from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

            self.defer(
                trigger=NoxusRunTrigger(
                    noxus_conn_id=self.noxus_conn_id,
                    workflow_id=self.workflow_id,
                    run_id=run_id,
                    deadline=deadline,
                    poll_interval=self.wait_options.poll_interval,
                    wait_strategy=self.wait_options.strategy,
                    on_human_feedback=self.wait_options.on_human_feedback,
                    cancel_on_kill=self.owns_run and self.cancel_on_kill,
                ),
                method_name="execute_complete",
                timeout=None
                if deadline is None
                else timedelta(seconds=max(0.0, deadline - time.time()) + DEFERRAL_TIMEOUT_GRACE_S),
            )
        outcome = self.hook.wait(
            self.workflow_id,
            run_id,
            self.wait_options,
            timeout=None if deadline is None else max(0.001, deadline - time.time()),
            log=self.log,
        )
        return self.complete(context, outcome)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after :class:`NoxusRunTrigger` fired: return the output or raise."""
        outcome = WaitOutcome.from_event(event)
        self.log.info("%s", outcome.message)
        return self.complete(context, outcome)

    # ---- the outcome -----------------------------------------------------------------------

    def complete(self, context: Context, outcome: WaitOutcome, run: Mapping[str, Any] | None = None) -> Any:
        """The task's result for a wait that ended with ``outcome``: the output of a completed run, or
        the error that says why there is none (stopping the run first when the task owns it).

        :param run: the run with its output, when already read.
        """
        run_id = outcome.run_id
        if outcome.status == OUTCOME_ERROR:
            outcome.raise_error()
        if outcome.status == OUTCOME_TIMEOUT:
            self.stop_run(run_id, "wait deadline passed")
            raise self.run_error(
                NoxusRunTimeoutError,
                run_id,
                f"The Noxus run was still {outcome.run_status or 'running'} at the wait's deadline "
                f"({self._limits_text()}); it was {'asked to stop' if self.owns_run else 'left running'}.",
                status=outcome.run_status,
            )
        if outcome.refused_feedback:
            self.stop_run(run_id, "paused for human feedback with on_human_feedback='fail'")
            raise self.run_error(
                NoxusRunError,
                run_id,
                "The Noxus run paused awaiting human feedback and on_human_feedback='fail'. "
                "Set on_human_feedback='wait' to wait for the feedback instead.",
                status=outcome.run_status,
            )
        if run is None:
            run = self.hook.get_run(self.workflow_id, run_id)
        if outcome.status != OUTCOME_SUCCESS:
            reason = run_error_message(run) or "the run gave no error message"
            raise self.run_error(
                NoxusRunError,
                run_id,
                f"Noxus run ended {outcome.run_status}: {reason}.",
                status=outcome.run_status,
            )
        output = run.get("output") or {}
        size = len(json.dumps(output, default=str).encode())
        if size > self.max_output_bytes:
            raise self.run_error(
                NoxusOutputTooLargeError,
                run_id,
                f"The output of the Noxus run is {size} bytes, over "
                f"max_output_bytes={self.max_output_bytes}. Raise max_output_bytes, limit the outputs "
                "with node_ids, or run with wait_for_completion=False and read the output where it is "
                f"needed with NoxusHook({self.noxus_conn_id!r}).get_run(workflow_id, run_id).",
                status=outcome.run_status,
            )
        output = validate_output(
            self.output_model,
            output,
            workflow_id=self.workflow_id,
            run_id=run_id,
            run_url=self.run_url(run_id),
        )
        self.log.info("Noxus run %s completed; returning its output (%d bytes).", run_id, size)
        self.delivered(context, run_id)
        return output

    def delivered(self, context: Context, run_id: str) -> None:
        """Called when the task is about to succeed with ``run_id``'s result (the operator records it)."""

    def run_error(
        self, error_class: type[NoxusRunError], run_id: str, message: str, *, status: str | None = None
    ) -> NoxusRunError:
        """An error about the run that names the workflow, the run, its status and its URL."""
        return error_class(
            message, status=status, workflow_id=self.workflow_id, run_id=run_id, run_url=self.run_url(run_id)
        )

    def stop_run(self, run_id: str, reason: str) -> None:
        """Stop the run, best effort and bounded: errors are logged, never raised."""
        if not self.owns_run:
            self.log.info("Noxus run %s was not created by this task; it is left as it is.", run_id)
            return
        try:
            NoxusHook(self.noxus_conn_id, retry_policy=STOP_RETRY_POLICY).stop_run(
                run_id, workflow_id=self.workflow_id
            )
        except Exception as error:
            self.log.warning("Could not stop Noxus run %s (%s): %s", run_id, reason, error)
        else:
            self.log.info("Asked Noxus to stop run %s (%s).", run_id, reason)

    def _limits_text(self) -> str:
        limits = []
        if self.timeout is not None:
            limits.append(f"timeout={seconds(self.timeout):g} s")
        if self.execution_timeout:
            limits.append(f"execution_timeout={self.execution_timeout}")
        return ", ".join(limits) or "no limit set"
