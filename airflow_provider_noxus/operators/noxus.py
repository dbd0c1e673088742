"""NoxusRunOperator: run a Noxus workflow from a DAG, deferrable by default.

In the order of a run's life: :meth:`~NoxusRunOperator.execute` finds the run this task instance
already made, or creates one (its id and URL go to XCom before any wait); the wait happens in the
triggerer or, with ``deferrable=False``, on the worker (:mod:`airflow_provider_noxus.task_wait`);
:meth:`~NoxusRunOperator.execute_complete` resumes after the trigger; the task returns the run's output.

One Noxus run per intent (:mod:`airflow_provider_noxus.run_identity`; the README has the table):

- a retry of a try that did not deliver reattaches to its run when the intent (workflow, version,
  inputs, options) is unchanged: still running -> wait; completed -> its output; failed or stopped ->
  a new run;
- a try after a delivered one (the task succeeded, then was cleared) makes a new run;
- a changed intent makes a new run, and stops the old one if it still runs;
- a create whose answer was lost is looked up in the workflow's run list and adopted, in the same try
  and, on Airflow 3.3+, in the next one before anything is created;
- a task killed while its create is in flight stops that run when the answer arrives.

Airflow 3.3+ keeps the record in ``task_state_store``; older versions keep it for one try only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus import protocol
from airflow_provider_noxus._compat import AIRFLOW_V_3_3_PLUS, AirflowException, BaseOperator
from airflow_provider_noxus.exceptions import (
    NoxusError,
    NoxusNotFoundError,
    NoxusProtocolError,
    NoxusRunError,
    NoxusServerError,
    NoxusSyncEndpointTimeout,
    NoxusTransportError,
    shorten,
)
from airflow_provider_noxus.files import NoxusFile, resolve_file_inputs
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.links.noxus import NoxusRunLink
from airflow_provider_noxus.protocol import FAILURE_STATUSES, NoxusRunStatus
from airflow_provider_noxus.run_identity import (
    RunLedger,
    RunRecord,
    find_lost_run,
    fingerprint,
    intent_fingerprint,
)
from airflow_provider_noxus.task_wait import DEFAULT_MAX_OUTPUT_BYTES, NoxusRunWaitMixin, seconds
from airflow_provider_noxus.wait import DEFAULT_POLL_INTERVAL_S, WaitOptions, check_timeout

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context

#: Seconds after an ambiguous create failure at which the run list is read for the lost run: a run
#: may appear in the list a little after its create was sent.
LOOKUP_DELAYS_S = (0.5, 2.0, 5.0)


def _is_ambiguous(error: NoxusError) -> bool:
    """Whether a failed create may still have made a run: the request reached the server and no clear
    refusal came back (a read timeout, a reset or truncated answer, a 5xx, a body that is not the run)."""
    if isinstance(error, NoxusTransportError):
        return error.reached_server
    return isinstance(error, (NoxusServerError, NoxusProtocolError)) and not isinstance(
        error, NoxusSyncEndpointTimeout
    )


class NoxusRunOperator(NoxusRunWaitMixin, BaseOperator):
    """Run a Noxus workflow and return its output.

    :param workflow_id: the workflow to run. (templated)
    :param inputs: input-node label (or node id) -> value; values may be
        :class:`~airflow_provider_noxus.files.NoxusFile`. (templated)
    :param workflow_version_id: run this saved version instead of the current one. (templated)
    :param node_ids: run only these nodes and what they depend on. (templated)
    :param callback_url: http(s) URL the Noxus server POSTs to when the run ends. (templated)
    :param noxus_conn_id: the Noxus connection. (templated)
    :param wait_for_completion: wait for the run and return its output; False returns the run id.
    :param deferrable: wait in the triggerer, freeing the worker slot; False waits on the worker.
    :param end_from_trigger: with ``deferrable``, the trigger ends the task (its output, or its error
        in the task log) instead of resuming it on a worker; the task resumes on a worker all the same
        when it must (see :meth:`resume_reason`, and the README's "Ending in the triggerer": why it is
        off by default).
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
        "noxus_conn_id",
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
        end_from_trigger: bool = False,
        use_sync_endpoint: bool = False,
        wait_strategy: str = "auto",
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        on_human_feedback: str = "wait",
        output_keys_by_id: bool = False,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        allow_private_file_urls: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = f"Task {self.task_id!r}"
        try:
            self.wait_options = WaitOptions(
                strategy=wait_strategy, poll_interval=poll_interval, on_human_feedback=on_human_feedback
            )
            self.timeout = check_timeout("timeout", seconds(timeout))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if not workflow_id:
            raise ValueError(f"{where}: workflow_id is required.")
        if inputs is not None and not isinstance(inputs, (Mapping, str)):
            raise TypeError(f"{where}: inputs must be a dict, got {type(inputs).__name__}.")
        if callback_url and "{{" not in callback_url and not callback_url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: callback_url must be an http(s) URL, got {callback_url!r}.")
        if use_sync_endpoint and not wait_for_completion:
            raise ValueError(
                f"{where}: use_sync_endpoint=True waits by nature; it cannot go with "
                "wait_for_completion=False."
            )
        if output_keys_by_id and not use_sync_endpoint:
            raise ValueError(
                f"{where}: output_keys_by_id=True needs use_sync_endpoint=True (the Noxus API keys "
                "outputs by node id only on its sync endpoint)."
            )
        if max_output_bytes <= 0:
            raise ValueError(f"{where}: max_output_bytes must be above 0.")
        self.workflow_id = workflow_id
        self.inputs = inputs
        self.workflow_version_id = workflow_version_id
        self.node_ids = node_ids
        self.callback_url = callback_url
        self.noxus_conn_id = noxus_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        #: ``end_from_trigger`` under another name: Airflow refuses to load a DAG whose task has an
        #: ``end_from_trigger`` attribute while listener plugins are registered; this task resumes on
        #: a worker then instead (:meth:`resume_reason`).
        self.ends_in_triggerer = end_from_trigger
        self.use_sync_endpoint = use_sync_endpoint
        self.cancel_on_kill = cancel_on_kill
        self.output_keys_by_id = output_keys_by_id
        self.max_output_bytes = max_output_bytes
        self.allow_private_file_urls = allow_private_file_urls
        #: The run this try works on, for on_kill.
        self._active_run_id: str | None = None
        #: The record of a create in flight (sent, no answer yet), for on_kill.
        self._create_in_flight: RunRecord | None = None
        self._killed = False

    # ---- execute: the task instance's run, found or created -------------------------------

    def execute(self, context: Context) -> Any:
        ledger = self._ledger(context)
        inputs = self._rendered_inputs()
        protocol.check_json_inputs(inputs, opaque=(NoxusFile,))
        intent = intent_fingerprint(
            self.workflow_id,
            inputs,
            workflow_version_id=self.workflow_version_id,
            node_ids=self.node_ids,
            callback_url=self.callback_url,
            use_sync_endpoint=self.use_sync_endpoint,
        )
        max_tries = getattr(context.get("ti"), "max_tries", None)
        run = self._earlier_run(ledger, intent, max_tries)
        if run is None:
            run = self._create(ledger, intent, inputs, max_tries)
        run_id = str(run["id"])
        self._active_run_id = run_id
        self.push_run_link(context, run_id)
        if not self.wait_for_completion:
            self.delivered(context, run_id)
            return run_id
        return self.wait_for(context, run)

    def _ledger(self, context: Context) -> RunLedger:
        store = context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None  # type: ignore[call-overload]
        ledger = RunLedger(store)
        if not ledger.durable and getattr(context.get("ti"), "try_number", 1) > 1:
            self.log.warning(
                "This is try %s of the task. Airflow before 3.3 has no task_state_store, so this try cannot "
                "reattach to a run started by an earlier try and creates a new run (an earlier try that was "
                "killed with cancel_on_kill=True stopped its run).",
                context["ti"].try_number,
            )
        return ledger

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

    def _earlier_run(
        self, ledger: RunLedger, intent: str, max_tries: int | None
    ) -> Mapping[str, Any] | None:
        """The run of an earlier try to carry on with, if any; a run of another intent, or of a try
        before a clear, is stopped."""
        record = ledger.record
        if record is None:
            return None
        if record.delivered:
            self.log.info(
                "Noxus run %s already delivered its result to an earlier try of this task (the task was "
                "cleared or re-run): creating a new run.",
                record.run_id,
            )
            return None
        if record.pending:
            run = self._find_lost_run(record, attempts=1)
            if run is None:
                return None
            record = record.with_run(str(run["id"]))
            ledger.save(record)
        assert record.run_id is not None
        if record.intent != intent:
            self.stop_run(
                record.run_id,
                "the task's workflow, version, inputs or options changed since the try that started it; "
                "a new run replaces it",
            )
            return None
        if record.cleared_since(max_tries):
            self.stop_run(record.run_id, "the task was cleared since the try that started it")
            return None
        try:
            run = self.hook.get_run(self.workflow_id, record.run_id)
        except NoxusNotFoundError:
            self.log.warning(
                "The Noxus run %s of an earlier try no longer exists; creating a new run.", record.run_id
            )
            return None
        if NoxusRunStatus.parse(run.get("status")) in FAILURE_STATUSES:
            self.log.warning(
                "The Noxus run %s of an earlier try ended %s; creating a new run.",
                record.run_id,
                run.get("status"),
            )
            return None
        self.log.info(
            "Reattaching to Noxus run %s (%s) created by an earlier try.", record.run_id, run.get("status")
        )
        return run

    def _create(
        self, ledger: RunLedger, intent: str, inputs: Mapping[str, Any], max_tries: int | None
    ) -> Mapping[str, Any]:
        """Create the run; a create whose answer is lost is found again, never made twice."""
        resolved = resolve_file_inputs(
            inputs, hook=self.hook, allow_private_urls=self.allow_private_file_urls
        )
        body = protocol.create_run_body(
            resolved,
            workflow_version_id=self.workflow_version_id,
            node_ids=self.node_ids,
            callback_url=None if self.use_sync_endpoint else self.callback_url,
        )
        record = RunRecord(
            workflow_id=self.workflow_id,
            intent=intent,
            sent_at=time.time(),
            input_fingerprint=fingerprint(body["input"]),
            max_tries=max_tries,
        )
        ledger.save(record)
        self._create_in_flight = record
        try:
            run = self._send_create(resolved)
        except NoxusError as error:
            if not _is_ambiguous(error):
                raise
            run = self._adopt_after(error, record)
        except BaseException:
            # Cut short (execution_timeout, an interrupt): the run may exist; stop it if it is found.
            if self.cancel_on_kill:
                lost = self._find_lost_run(record, attempts=1)
                if lost is not None:
                    self.stop_run(str(lost["id"]), "the task was interrupted while the run was being created")
            raise
        finally:
            self._create_in_flight = None
        ledger.save(record.with_run(str(run["id"])))
        if self._killed:
            self.stop_run(str(run["id"]), "the task was killed while the run was being created")
            raise AirflowException(
                f"Task {self.task_id!r} was killed while Noxus run {run['id']} was being created."
            )
        return run

    def _send_create(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """One create (the sync endpoint's run is final, or a run still going after its 504)."""
        options: dict[str, Any] = {"workflow_version_id": self.workflow_version_id, "node_ids": self.node_ids}
        if not self.use_sync_endpoint:
            run = self.hook.create_run(self.workflow_id, inputs, callback_url=self.callback_url, **options)
        else:
            try:
                run = self.hook.create_run_sync(
                    self.workflow_id, inputs, use_output_ids=self.output_keys_by_id, **options
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
        if not isinstance(run.get("id"), str) or not run["id"]:
            raise NoxusProtocolError(
                "The Noxus API answered the run creation without a run id.",
                endpoint=f"POST /v1/workflows/{self.workflow_id}/runs",
                workflow_id=self.workflow_id,
                detail=shorten(json.dumps(run, default=str)),
            )
        return run

    def _adopt_after(self, error: NoxusError, record: RunRecord) -> Mapping[str, Any]:
        """The run a create that failed with ``error`` made, found in the workflow's run list; else
        the error, to be retried (on Airflow 3.3+ the next try looks again before creating)."""
        self.log.warning(
            "The answer to the run creation was lost (%s); looking for the run it may have made.", error
        )
        run = self._find_lost_run(record, attempts=len(LOOKUP_DELAYS_S))
        if run is not None:
            return run
        raise NoxusRunError(
            "The Noxus run creation got no usable answer and no run made by it was found in the workflow's "
            "newest runs. "
            + (
                "The next try looks for it again before creating a new run."
                if AIRFLOW_V_3_3_PLUS
                else "A retry creates a new run (Airflow before 3.3 cannot carry the search over)."
            ),
            workflow_id=self.workflow_id,
        ) from error

    def _find_lost_run(self, record: RunRecord, *, attempts: int) -> Mapping[str, Any] | None:
        """Look for the run of ``record``'s create in the workflow's run list, ``attempts`` times at
        :data:`LOOKUP_DELAYS_S`; log what was found."""
        for attempt, delay in enumerate(LOOKUP_DELAYS_S[:attempts]):
            if attempt:
                time.sleep(delay)
            try:
                run = find_lost_run(
                    lambda page, size: self.hook.list_runs(self.workflow_id, page=page, size=size),
                    record,
                    self.workflow_version_id,
                )
            except NoxusError as error:
                self.log.warning("Could not read the runs of workflow %s: %s", self.workflow_id, error)
                continue
            if run is not None:
                self.log.info(
                    "Found Noxus run %s (%s), made by a create whose answer was lost: adopting it.",
                    run["id"],
                    run.get("status"),
                )
                return run
        return None

    # ---- execute_complete and the result (the wait is in task_wait) -------------------------

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> Any:
        if isinstance(event, Mapping):
            self._active_run_id = str(event["run_id"])
        else:  # a task the trigger ended, resumed all the same (``airflow dags test``)
            self._active_run_id = self.waited_run_id(context)
        return super().execute_complete(context, event)

    def delivered(self, context: Context, run_id: str) -> None:
        """Mark the run as delivered: a later try of this task instance (a clear) makes a new run."""
        ledger = RunLedger(context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None)  # type: ignore[call-overload]
        if ledger.record is not None and ledger.record.run_id == run_id:
            ledger.save(ledger.record.as_delivered())

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
        """Stop the run when the task is killed on the worker (best effort).

        Killed while its create is in flight (Airflow runs this in a signal handler, between two steps
        of the create), the run is stopped as soon as the create answers; a create cut short (by
        ``execution_timeout``) leaves its run to be found in the workflow's run list and stopped.
        """
        if not self.cancel_on_kill:
            return
        self._killed = True
        if self._active_run_id:
            self.stop_run(self._active_run_id, "task killed")
        elif self._create_in_flight is not None:
            self.log.info("The task was killed during the run creation: the run is stopped once made.")
