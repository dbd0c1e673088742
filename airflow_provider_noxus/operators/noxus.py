"""NoxusRunOperator: run a Noxus workflow from a DAG, deferrable by default.

The run is created on the worker; its id and URL go to XCom (``run_id``, ``run_url``) before any
wait. The wait happens in the triggerer (:class:`~airflow_provider_noxus.triggers.noxus.NoxusRunTrigger`)
or, with ``deferrable=False``, on the worker. The task returns the run's output.

Exactly one run per task instance: on Airflow 3.3+ the run id is kept in ``task_state_store``
right after creation, and a later try of the same task instance (a retry after a worker crash,
a spurious failure) reattaches to it: still running -> wait on it; completed -> return its
output; failed or stopped -> create a new run. Airflow 2.11 and 3.0-3.2 have no such store:
there a retry creates a new run (a warning says so).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_noxus._compat import AIRFLOW_V_3_3_PLUS, BaseOperator
from airflow_provider_noxus.exceptions import (
    NoxusNotFoundError,
    NoxusOutputTooLargeError,
    NoxusRunError,
    NoxusRunTimeoutError,
    NoxusSyncEndpointTimeout,
    shorten,
)
from airflow_provider_noxus.files import resolve_file_inputs
from airflow_provider_noxus.hooks.noxus import NoxusHook, WaitStrategy
from airflow_provider_noxus.links.noxus import XCOM_RUN_ID_KEY, XCOM_RUN_URL_KEY, NoxusRunLink
from airflow_provider_noxus.protocol import (
    FAILURE_STATUSES,
    TERMINAL_STATUSES,
    NoxusRunStatus,
    RetryPolicy,
)
from airflow_provider_noxus.triggers.noxus import (
    EVENT_ERROR,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    NoxusRunTrigger,
    RunProgressLogger,
    validate_wait_options,
)

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context

#: ``task_state_store`` key holding ``{"run_id", "workflow_id"}`` of the task instance's run.
RUN_STATE_KEY = "noxus_run"
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
#: The wait ends this long (at most) before ``execution_timeout``, so the run can be stopped first.
EXECUTION_TIMEOUT_MARGIN_S = 10.0
#: Extra time given to Airflow's own deferral timeout beyond the trigger's deadline (a safety net).
DEFERRAL_TIMEOUT_GRACE_S = 60.0
#: Retries of the best-effort stop sent when a task is killed, timed out or refused feedback.
STOP_RETRY_POLICY = RetryPolicy(max_attempts=2, backoff_initial=0.5, backoff_max=2.0, total_budget=15.0)


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


def run_error_message(run: Mapping[str, Any]) -> str | None:
    """The run's own error text: ``output["error"]``, else the last entry of ``run_logs``."""
    output = run.get("output")
    if isinstance(output, Mapping) and output.get("error"):
        return shorten(str(output["error"]))
    logs = (run.get("progress_details") or {}).get("run_logs")
    if logs:
        last = list(logs.values())[-1] if isinstance(logs, Mapping) else logs
        return shorten(str(last[-1] if isinstance(last, list) and last else last))
    return None


class NoxusRunWaitMixin:
    """What the operator and the sensor share: the deadline, the deferral, the event handling and
    turning a final run into an output or an exception.

    Expects ``noxus_conn_id``, ``workflow_id``, ``poll_interval``, ``wait_strategy``,
    ``on_human_feedback``, ``max_output_bytes``, ``timeout`` (seconds or None) and
    ``execution_timeout`` attributes, and Airflow's ``log`` and ``defer``.
    """

    #: Whether this task owns the run: it stops the run on timeout, kill and refused feedback.
    owns_run: bool = True

    if TYPE_CHECKING:
        noxus_conn_id: str
        workflow_id: str
        poll_interval: float
        wait_strategy: str
        on_human_feedback: str
        max_output_bytes: int
        timeout: Any  # seconds, a timedelta or None (sensors: seconds)
        execution_timeout: timedelta | None
        cancel_on_kill: bool
        log: Any

        def defer(self, **kwargs: Any) -> Any: ...

    @cached_property
    def hook(self) -> NoxusHook:
        return NoxusHook(self.noxus_conn_id)

    def run_url(self, run_id: str) -> str:
        return self.hook.run_url(self.workflow_id, run_id)

    # ---- the deadline --------------------------------------------------------------------

    def wait_deadline(self, context: Context) -> float | None:
        """Epoch seconds at which the wait gives up: ``timeout`` from now, and a little before
        ``execution_timeout`` runs out (counted from the task's start)."""
        now = time.time()
        limits = []
        timeout = _seconds(self.timeout)
        if timeout is not None:
            limits.append(now + timeout)
        if self.execution_timeout:
            started = getattr(context.get("ti"), "start_date", None)
            start = started.timestamp() if started else now
            total = self.execution_timeout.total_seconds()
            limits.append(start + total - min(EXECUTION_TIMEOUT_MARGIN_S, total / 10))
        return min(limits) if limits else None

    # ---- waiting -------------------------------------------------------------------------

    def wait_for(self, context: Context, run: Mapping[str, Any], *, deferrable: bool) -> Any:
        """Wait for ``run`` to end and return its output; a run already final is not waited on."""
        run_id = str(run["id"])
        status = NoxusRunStatus.parse(run.get("status"))
        if status in TERMINAL_STATUSES or self._refuses_feedback(run):
            return self.finish(run if "output" in run else self.hook.get_run(self.workflow_id, run_id))
        deadline = self.wait_deadline(context)
        if deferrable:
            self.defer(
                trigger=NoxusRunTrigger(
                    noxus_conn_id=self.noxus_conn_id,
                    workflow_id=self.workflow_id,
                    run_id=run_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    wait_strategy=self.wait_strategy,
                    on_human_feedback=self.on_human_feedback,
                    cancel_on_kill=self.owns_run and self.cancel_on_kill,
                ),
                method_name="execute_complete",
                timeout=None
                if deadline is None
                else timedelta(seconds=max(0.0, deadline - time.time()) + DEFERRAL_TIMEOUT_GRACE_S),
            )
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            final = self.hook.wait_for_run(
                self.workflow_id,
                run_id,
                strategy=cast("WaitStrategy", self.wait_strategy),
                poll_interval=self.poll_interval,
                timeout=timeout,
                on_event=RunProgressLogger(self.log, run_id).on_event,
                fail_on_human_feedback=self.on_human_feedback == "fail",
            )
        except NoxusRunTimeoutError as error:
            self.fail_timeout(run_id, error.status)
        except NoxusRunError as error:
            if error.status != NoxusRunStatus.AWAITING_HUMAN_FEEDBACK.value:
                raise
            self.fail_feedback(run_id)
        return self.finish(final)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after :class:`NoxusRunTrigger` fired: return the output or raise."""
        run_id = str(event["run_id"])
        self.log.info("%s", event.get("message"))
        status = event.get("status")
        if status == EVENT_TIMEOUT:
            self.fail_timeout(run_id, event.get("run_status"))
        if status == EVENT_ERROR:
            raise self.run_error(
                NoxusRunError,
                run_id,
                f"Waiting for the Noxus run failed: {event.get('message')}",
            )
        if (
            status != EVENT_SUCCESS
            and event.get("run_status") == NoxusRunStatus.AWAITING_HUMAN_FEEDBACK.value
        ):
            self.fail_feedback(run_id)
        return self.finish(self.hook.get_run(self.workflow_id, run_id))

    # ---- outcomes ------------------------------------------------------------------------

    def run_error(
        self, error_class: type[NoxusRunError], run_id: str, message: str, *, status: str | None = None
    ) -> NoxusRunError:
        """An error about the run that names the workflow, the run, its status and its URL."""
        return error_class(
            message, status=status, workflow_id=self.workflow_id, run_id=run_id, run_url=self.run_url(run_id)
        )

    def _refuses_feedback(self, run: Mapping[str, Any]) -> bool:
        return (
            self.on_human_feedback == "fail"
            and run.get("status") == NoxusRunStatus.AWAITING_HUMAN_FEEDBACK.value
        )

    def finish(self, run: Mapping[str, Any]) -> Any:
        """The output of a completed run; :class:`NoxusRunError` for any other status."""
        run_id = str(run.get("id"))
        if self._refuses_feedback(run):
            self.fail_feedback(run_id)
        status = NoxusRunStatus.parse(run.get("status"))
        if status in FAILURE_STATUSES:
            reason = run_error_message(run) or "the run gave no error message"
            raise self.run_error(
                NoxusRunError,
                run_id,
                f"Noxus run ended {run.get('status')}: {reason}.",
                status=str(run.get("status")),
            )
        if status is not NoxusRunStatus.COMPLETED:
            raise self.run_error(
                NoxusRunError,
                run_id,
                f"Noxus run is {run.get('status')!r}, not final, where a final status was expected.",
                status=str(run.get("status")),
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
                status=str(run.get("status")),
            )
        self.log.info("Noxus run %s completed; returning its output (%d bytes).", run_id, size)
        return output

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

    def fail_timeout(self, run_id: str, run_status: str | None) -> Any:
        self.stop_run(run_id, "wait deadline passed")
        action = "asked to stop" if self.owns_run else "left running"
        raise self.run_error(
            NoxusRunTimeoutError,
            run_id,
            f"The Noxus run was still {run_status or 'running'} at the wait's deadline "
            f"({self._limits_text()}); it was {action}.",
            status=run_status,
        )

    def _limits_text(self) -> str:
        limits = []
        if self.timeout is not None:
            limits.append(f"timeout={_seconds(self.timeout):g} s")
        if self.execution_timeout:
            limits.append(f"execution_timeout={self.execution_timeout}")
        return ", ".join(limits) or "no limit set"

    def fail_feedback(self, run_id: str) -> Any:
        self.stop_run(run_id, "paused for human feedback with on_human_feedback='fail'")
        raise self.run_error(
            NoxusRunError,
            run_id,
            "The Noxus run paused awaiting human feedback and on_human_feedback='fail'. "
            "Set on_human_feedback='wait' to wait for the feedback instead.",
            status=NoxusRunStatus.AWAITING_HUMAN_FEEDBACK.value,
        )


class NoxusRunOperator(NoxusRunWaitMixin, BaseOperator):
    """Run a Noxus workflow and return its output.

    :param workflow_id: the workflow to run. (templated)
    :param inputs: input-node label (or node id) -> value; values may be
        :class:`~airflow_provider_noxus.files.NoxusFile`. (templated)
    :param workflow_version_id: run this saved version instead of the current one. (templated)
    :param node_ids: run only these nodes and what they depend on. (templated)
    :param callback_url: http(s) URL the Noxus server POSTs to when the run ends. (templated)
    :param noxus_conn_id: the Noxus connection.
    :param wait_for_completion: wait for the run and return its output; False returns the run id.
    :param deferrable: wait in the triggerer, freeing the worker slot; False waits on the worker.
    :param use_sync_endpoint: create the run with the sync endpoint (one blocking call, for short
        flows); when the server gives up after 120 s the task waits on that same run.
    :param wait_strategy: ``stream``, ``poll`` or ``auto``; see :class:`NoxusRunTrigger`.
    :param poll_interval: seconds between status checks when polling.
    :param timeout: wall-clock limit of the wait (seconds or timedelta); past it the run is stopped
        and the task fails. ``execution_timeout`` is honoured the same way.
    :param cancel_on_kill: stop the run when the task is killed.
    :param on_human_feedback: ``wait`` while the run awaits human feedback, or ``fail`` (the run is
        then stopped).
    :param output_keys_by_id: key the output by output-node id instead of label; the API offers it
        on the sync endpoint only, so it needs ``use_sync_endpoint=True``.
    :param max_output_bytes: largest output (JSON) returned into XCom.
    :param allow_private_file_urls: let file URLs point at private or loopback hosts (tests against
        a local server); None reads the ``NOXUS_ALLOW_PRIVATE_FILE_URLS`` environment variable.
    """

    template_fields: Sequence[str] = (
        "workflow_id",
        "inputs",
        "workflow_version_id",
        "node_ids",
        "callback_url",
    )
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (NoxusRunLink(),)
    ui_color = "#e8e0ff"

    def __init__(
        self,
        *,
        workflow_id: str,
        inputs: dict[str, Any] | None = None,
        workflow_version_id: str | None = None,
        node_ids: list[str] | None = None,
        callback_url: str | None = None,
        noxus_conn_id: str = NoxusHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        use_sync_endpoint: bool = False,
        wait_strategy: str = "auto",
        poll_interval: float = 5.0,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        on_human_feedback: str = "wait",
        output_keys_by_id: bool = False,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        allow_private_file_urls: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        validate_wait_options(
            wait_strategy=wait_strategy, on_human_feedback=on_human_feedback, poll_interval=poll_interval
        )
        if not workflow_id:
            raise ValueError(f"Task {self.task_id!r}: workflow_id is required.")
        if inputs is not None and not isinstance(inputs, Mapping) and not isinstance(inputs, str):
            raise TypeError(f"Task {self.task_id!r}: inputs must be a dict, got {type(inputs).__name__}.")
        timeout_s = _seconds(timeout)
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"Task {self.task_id!r}: timeout must be above 0, got {timeout!r}.")
        if callback_url and "{{" not in callback_url and not callback_url.startswith(("http://", "https://")):
            raise ValueError(
                f"Task {self.task_id!r}: callback_url must be an http(s) URL, got {callback_url!r}."
            )
        if use_sync_endpoint and not wait_for_completion:
            raise ValueError(
                f"Task {self.task_id!r}: use_sync_endpoint=True waits by nature; "
                "it cannot go with wait_for_completion=False."
            )
        if output_keys_by_id and not use_sync_endpoint:
            raise ValueError(
                f"Task {self.task_id!r}: output_keys_by_id=True needs use_sync_endpoint=True (the Noxus API "
                "keys outputs by node id only on its sync endpoint)."
            )
        if max_output_bytes <= 0:
            raise ValueError(f"Task {self.task_id!r}: max_output_bytes must be above 0.")
        self.workflow_id = workflow_id
        self.inputs = inputs
        self.workflow_version_id = workflow_version_id
        self.node_ids = node_ids
        self.callback_url = callback_url
        self.noxus_conn_id = noxus_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.use_sync_endpoint = use_sync_endpoint
        self.wait_strategy = wait_strategy
        self.poll_interval = poll_interval
        self.timeout = timeout_s
        self.cancel_on_kill = cancel_on_kill
        self.on_human_feedback = on_human_feedback
        self.output_keys_by_id = output_keys_by_id
        self.max_output_bytes = max_output_bytes
        self.allow_private_file_urls = allow_private_file_urls
        self._active_run_id: str | None = None

    # ---- the task instance's run ---------------------------------------------------------

    def _stored_run(self, context: Context) -> dict[str, Any] | None:
        store = context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None  # type: ignore[call-overload]
        value = store.get(RUN_STATE_KEY) if store is not None else None
        return value if isinstance(value, dict) and value.get("run_id") else None

    def _remember(self, context: Context, run_id: str) -> None:
        """Keep the run id where a kill, a later try and the UI find it, before any wait."""
        self._active_run_id = run_id
        store = context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None  # type: ignore[call-overload]
        if store is not None:
            store.set(RUN_STATE_KEY, {"run_id": run_id, "workflow_id": self.workflow_id})
        ti = context["ti"]
        ti.xcom_push(key=XCOM_RUN_ID_KEY, value=run_id)
        ti.xcom_push(key=XCOM_RUN_URL_KEY, value=self.run_url(run_id))
        self.log.info("Noxus run %s of workflow %s: %s", run_id, self.workflow_id, self.run_url(run_id))

    def _reattach(self, context: Context) -> dict[str, Any] | None:
        """The run of an earlier try of this task instance, if there is one worth keeping."""
        stored = self._stored_run(context)
        if stored is None:
            if not AIRFLOW_V_3_3_PLUS and getattr(context.get("ti"), "try_number", 1) > 1:
                self.log.warning(
                    "This is try %s of the task. Airflow before 3.3 has no task_state_store, so this try "
                    "creates a new Noxus run; a run started by an earlier try is not reattached (it was "
                    "stopped if that try was killed with cancel_on_kill=True).",
                    context["ti"].try_number,
                )
            return None
        run_id = str(stored["run_id"])
        if stored.get("workflow_id") != self.workflow_id:
            self.log.warning(
                "The stored Noxus run %s belongs to workflow %s, not %s; creating a new run.",
                run_id,
                stored.get("workflow_id"),
                self.workflow_id,
            )
            return None
        try:
            run = self.hook.get_run(self.workflow_id, run_id)
        except NoxusNotFoundError:
            self.log.warning(
                "The Noxus run %s of an earlier try no longer exists; creating a new run.", run_id
            )
            return None
        if NoxusRunStatus.parse(run.get("status")) in FAILURE_STATUSES:
            self.log.warning(
                "The Noxus run %s of an earlier try ended %s; creating a new run.", run_id, run.get("status")
            )
            return None
        self.log.info(
            "Reattaching to Noxus run %s (%s) created by an earlier try.", run_id, run.get("status")
        )
        return run

    def _rendered_inputs(self) -> Mapping[str, Any]:
        """``inputs`` after rendering: a dict, or a JSON object in a string (from a whole-value template)."""
        inputs = self.inputs or {}
        if isinstance(inputs, str):
            try:
                inputs = json.loads(inputs)
            except ValueError:
                inputs = None
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"Task {self.task_id!r}: inputs of workflow {self.workflow_id} must render to a dict or "
                f"a JSON object, got {self.inputs!r:.200}."
            )
        return inputs

    # ---- execute -------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        run = self._reattach(context)
        if run is None:
            inputs = resolve_file_inputs(
                self._rendered_inputs(), hook=self.hook, allow_private_urls=self.allow_private_file_urls
            )
            if self.use_sync_endpoint:
                return self._run_sync(context, inputs)
            run = self.hook.create_run(
                self.workflow_id,
                inputs,
                workflow_version_id=self.workflow_version_id,
                node_ids=self.node_ids,
                callback_url=self.callback_url,
            )
        self._remember(context, str(run["id"]))
        if not self.wait_for_completion:
            return str(run["id"])
        return self.wait_for(context, run, deferrable=self.deferrable)

    def _run_sync(self, context: Context, inputs: dict[str, Any]) -> Any:
        try:
            run = self.hook.create_run_sync(
                self.workflow_id,
                inputs,
                workflow_version_id=self.workflow_version_id,
                node_ids=self.node_ids,
                use_output_ids=self.output_keys_by_id,
            )
        except NoxusSyncEndpointTimeout as error:
            if not error.run_id:
                raise
            self.log.info(
                "The sync endpoint gave up before Noxus run %s ended; waiting for that run%s.",
                error.run_id,
                " (its output will be keyed by label: the API keys by id only on the sync endpoint)"
                if self.output_keys_by_id
                else "",
            )
            run = {"id": error.run_id, "status": NoxusRunStatus.RUNNING.value}
        self._remember(context, str(run["id"]))
        return self.wait_for(context, run, deferrable=self.deferrable)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        self._active_run_id = str(event["run_id"])
        return super().execute_complete(context, event)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The run and its URL and spot:// file inputs, for OpenLineage (:mod:`..openlineage`)."""
        from airflow_provider_noxus.openlineage import noxus_run_lineage

        return noxus_run_lineage(
            self,
            run_id=self._active_run_id,
            inputs=self.inputs,
            workflow_version_id=self.workflow_version_id,
        )

    def on_kill(self) -> None:
        """Stop the run when the task is killed on the worker (best effort)."""
        if self._active_run_id and self.cancel_on_kill:
            self.stop_run(self._active_run_id, "task killed")
