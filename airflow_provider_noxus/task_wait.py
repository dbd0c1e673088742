"""What the operator and the sensor share: waiting for a run from a task, and how the task ends.

A task waits either deferred (:class:`~airflow_provider_noxus.triggers.noxus.NoxusRunTrigger` in the
triggerer) or blocking on the worker (:meth:`~airflow_provider_noxus.hooks.noxus.NoxusHook.wait`); both
run the same wait and end with a :class:`~airflow_provider_noxus.wait.WaitOutcome`, which
:func:`~airflow_provider_noxus.run_result.task_result` turns into the task's result or its error, on
the worker (:meth:`NoxusRunWaitMixin.complete`) or, with ``end_from_trigger``, in the triggerer, where
the trigger ends the task itself. :meth:`NoxusRunWaitMixin.resume_reason` says when a task must come
back to a worker all the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_noxus.exceptions import NoxusRunError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.links.noxus import RUN_URL_ATTRIBUTE, XCOM_RUN_ID_KEY, XCOM_RUN_URL_KEY
from airflow_provider_noxus.outputs import model_import_path, output_check
from airflow_provider_noxus.protocol import NoxusRunStatus, RetryPolicy
from airflow_provider_noxus.run_result import (
    Pause,
    ReadRun,
    ResultRules,
    ResultStep,
    StopRun,
    run_steps,
    task_result,
)
from airflow_provider_noxus.wait import WaitOptions, WaitOutcome, judge_run

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context
    from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

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


def callbacks_lost_in_triggerer() -> bool:
    """Whether Airflow would drop the callbacks of a task ended in the triggerer: Airflow 2 queues them
    for the DAG processor, which runs queued callbacks only when it is standalone."""
    if AIRFLOW_V_3_0_PLUS:
        return False
    from airflow.configuration import conf

    return not conf.getboolean("scheduler", "standalone_dag_processor", fallback=False)


def listeners_registered() -> bool:
    """Whether this process registered listener plugins (OpenLineage's, when it is enabled): Airflow
    calls them only for tasks that end on a worker. Only a listener manager the task runner already
    built is looked at, so that nothing loads plugins (or imports OpenLineage) for this question."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.listener import get_listener_manager

        manager = get_listener_manager() if get_listener_manager.cache_info().currsize else None
    else:
        from airflow.listeners import listener

        manager = listener._listener_manager  # type: ignore[attr-defined]  # Airflow 2 keeps it there
    return bool(manager is not None and manager.has_listeners)


class NoxusRunWaitMixin:
    """Waiting for a Noxus run from a task: the deadline, deferring or blocking, and the outcome.

    Expects ``noxus_conn_id``, ``workflow_id``, ``wait_options`` (:class:`WaitOptions`),
    ``deferrable``, ``ends_in_triggerer``, ``max_output_bytes``, ``timeout`` (seconds or None),
    ``execution_timeout`` and ``cancel_on_kill`` attributes, and Airflow's ``log``, ``outlets``,
    ``do_xcom_push`` and ``defer``.
    """

    #: The pydantic model a completed run's output is validated against (:mod:`..outputs`), if any.
    output_model: Any = None

    if TYPE_CHECKING:
        noxus_conn_id: str
        workflow_id: str
        wait_options: WaitOptions
        deferrable: bool
        ends_in_triggerer: bool
        max_output_bytes: int
        timeout: Any
        execution_timeout: timedelta | None
        cancel_on_kill: bool
        do_xcom_push: bool
        outlets: Any
        on_success_callback: Any
        log: Any

        def defer(self, **kwargs: Any) -> NoReturn: ...

        def iter_mapped_dependants(self) -> Iterator[Any]: ...

        def has_dag(self) -> bool: ...

    @cached_property
    def hook(self) -> NoxusHook:
        return NoxusHook(self.noxus_conn_id)

    def run_url(self, run_id: str) -> str:
        return self.hook.run_url(self.workflow_id, run_id)

    def may_stop_run(self, run_id: str) -> bool:
        """Whether this task may stop ``run_id``: on timeout, refused feedback and (with
        ``cancel_on_kill``) kill. The one place that decides; override it per run."""
        return True

    def push_run_link(self, context: Context, run_id: str) -> None:
        """Put the run's id and link in XCom (the task's "Noxus run" button) and in the log."""
        ti = context["ti"]
        url = self.run_url(run_id)
        ti.xcom_push(key=XCOM_RUN_ID_KEY, value=run_id)
        ti.xcom_push(key=XCOM_RUN_URL_KEY, value=url)
        setattr(self, RUN_URL_ATTRIBUTE, url)
        self.log.info("Noxus run %s of workflow %s: %s", run_id, self.workflow_id, url)

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
            trigger = self.make_trigger(run_id, deadline)
            # The task process ends with the deferral: its connection to Noxus is closed first, not
            # left to the process's exit.
            self.hook.close()
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=None
                if deadline is None
                else timedelta(seconds=max(0.0, deadline - time.time()) + DEFERRAL_TIMEOUT_GRACE_S),
            )
        outcome = self.hook.wait(self.workflow_id, run_id, self.wait_options, deadline=deadline, log=self.log)
        return self.complete(context, outcome)

    def make_trigger(
        self, run_id: str, deadline: float | None, *, push_run_link: bool = False
    ) -> NoxusRunTrigger:
        """The trigger that waits for ``run_id``; it ends the task itself when ``ends_in_triggerer`` is
        on and :meth:`resume_reason` finds nothing against it (else it says why, in the task log)."""
        # Imported here: a DAG file (and a task that does not defer) need not load the trigger.
        from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger

        end_here = self.ends_in_triggerer
        if end_here and (reason := self.resume_reason()):
            self.log.info(
                "The task resumes on a worker once the run ends (not in the triggerer): %s.", reason
            )
            end_here = False
        may_stop = self.may_stop_run(run_id)
        return NoxusRunTrigger(
            noxus_conn_id=self.noxus_conn_id,
            workflow_id=self.workflow_id,
            run_id=run_id,
            deadline=deadline,
            poll_interval=self.wait_options.poll_interval,
            wait_strategy=self.wait_options.strategy,
            on_human_feedback=self.wait_options.on_human_feedback,
            cancel_on_kill=may_stop and self.cancel_on_kill,
            end_from_trigger=end_here,
            may_stop_run=may_stop,
            max_output_bytes=self.max_output_bytes,
            limits=self.limits_text(),
            push_output=self.do_xcom_push,
            push_run_link=push_run_link,
            output_model=model_import_path(self.output_model) if self.output_model else None,
        )

    def resume_reason(self) -> str | None:
        """Why this task cannot end in the triggerer and must resume on a worker, or None."""
        owner = next(cls for cls in type(self).__mro__ if "execute_complete" in vars(cls))
        if not owner.__module__.startswith("airflow_provider_noxus."):
            return f"{owner.__name__} overrides execute_complete, which only a worker can run"
        if self.output_model is not None and model_import_path(self.output_model) is None:
            return (
                f"its output_model {self.output_model.__qualname__} is defined where the triggerer cannot "
                "import it (a DAG file or a function); define it in a module both can import to end there"
            )
        if self.outlets:
            return (
                "the task has outlets, and Airflow records asset events only for tasks that end on a worker"
            )
        if self.do_xcom_push and self.has_dag() and next(self.iter_mapped_dependants(), None) is not None:
            return (
                "a downstream task maps over its output, and Airflow records how many items there are only "
                "for an output pushed on a worker"
            )
        if listeners_registered():
            return (
                "listener plugins are registered, and Airflow calls them only for tasks that end on a worker"
            )
        if self.on_success_callback and callbacks_lost_in_triggerer():
            return (
                "the task has an on_success_callback, which Airflow 2 runs for a task ended in the "
                "triggerer only with [scheduler] standalone_dag_processor = True"
            )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> Any:
        """Resume after :class:`NoxusRunTrigger` fired: return the output or raise.

        A trigger that ended the task sends no outcome; a runner that resumes such a task all the same
        (``airflow dags test`` does) hands over the event's bare state: the run is then read again.
        """
        if not isinstance(event, Mapping):
            run_id = self.waited_run_id(context)
            self.log.info(
                "The trigger ended this task (%s); reading Noxus run %s again for its result.", event, run_id
            )
            run = self.hook.get_run(self.workflow_id, run_id)
            outcome = judge_run(run, self.workflow_id, self.wait_options, self.log)
            if outcome is None:
                raise NoxusRunError(
                    f"The trigger ended this task ({event}) but the Noxus run is still {run.get('status')}.",
                    workflow_id=self.workflow_id,
                    run_id=run_id,
                    run_url=self.run_url(run_id),
                )
            return self.complete(context, outcome, run)
        outcome = WaitOutcome.from_event(event)
        self.log.info("%s", outcome.message)
        return self.complete(context, outcome)

    def waited_run_id(self, context: Context) -> str:
        """The run this task waits for, as pushed to XCom before the wait."""
        ti = context["ti"]
        # This map index only: a mapped task's pull by task id alone gives every mapped run id.
        map_index = getattr(ti, "map_index", -1)
        return str(ti.xcom_pull(task_ids=ti.task_id, key=XCOM_RUN_ID_KEY, map_indexes=map_index))

    # ---- the outcome -----------------------------------------------------------------------

    def complete(self, context: Context, outcome: WaitOutcome, run: Mapping[str, Any] | None = None) -> Any:
        """The task's result for a wait that ended with ``outcome`` (:func:`task_result`, on the worker).

        :param run: the run with its output, when already read.
        """
        run_id = outcome.run_id

        def perform(step: ResultStep) -> Any:
            if isinstance(step, StopRun):
                return self.stop_run(run_id, step.reason)
            if isinstance(step, Pause):
                return time.sleep(step.seconds)
            assert isinstance(step, ReadRun)
            return self.hook.get_run(self.workflow_id, run_id)

        output = run_steps(task_result(outcome, self.result_rules(run_id), run), perform)
        self.log.info("Noxus run %s completed; returning its output.", run_id)
        self.delivered(context, run_id)
        return output

    def result_rules(self, run_id: str) -> ResultRules:
        """What this task expects of ``run_id``'s end (the same rules the trigger applies)."""
        return ResultRules(
            run_url=self.run_url(run_id),
            limits=self.limits_text(),
            may_stop=self.may_stop_run(run_id),
            max_output_bytes=self.max_output_bytes,
            noxus_conn_id=self.noxus_conn_id,
            check_output=output_check(
                self.output_model, workflow_id=self.workflow_id, run_id=run_id, run_url=self.run_url(run_id)
            ),
        )

    def delivered(self, context: Context, run_id: str) -> None:
        """Called when the task is about to succeed with ``run_id``'s result (the operator records it)."""

    def stop_run(self, run_id: str, reason: str) -> None:
        """Stop the run if :meth:`may_stop_run` and it has not ended (a run that completed in the
        triggerer, then was cleared, is left alone); best effort and bounded: errors are logged, never
        raised."""
        if not self.may_stop_run(run_id):
            self.log.info("Noxus run %s is not this task's to stop; it is left as it is.", run_id)
            return
        hook = NoxusHook(self.noxus_conn_id, retry_policy=STOP_RETRY_POLICY)
        try:
            status = NoxusRunStatus.parse(hook.get_run_status(run_id).get("status"))
            if status is not None and status.is_terminal:
                self.log.info("Noxus run %s already ended %s: nothing to stop.", run_id, status.value)
                return
            hook.stop_run(run_id, workflow_id=self.workflow_id)
        except Exception as error:
            self.log.warning("Could not stop Noxus run %s (%s): %s", run_id, reason, error)
        else:
            self.log.info("Asked Noxus to stop run %s (%s).", run_id, reason)

    def limits_text(self) -> str:
        """The wait's limits in words, for a timeout's message."""
        limits = []
        if self.timeout is not None:
            limits.append(f"timeout={seconds(self.timeout):g} s")
        if self.execution_timeout:
            limits.append(f"execution_timeout={self.execution_timeout}")
        return ", ".join(limits) or "no limit set"
