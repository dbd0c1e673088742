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
- a create whose answer was lost is looked up in the workflow's run list and adopted only when exactly
  one run with its input and version was created in the create's window, in the same try and, on
  Airflow 3.3+, in the next one before anything is created; an adopted run is never stopped by the task;
- a task killed while its create is in flight stops that run when the answer arrives.

The rules are :func:`~airflow_provider_noxus.run_identity.decide`'s; this module performs what it answers.

Airflow 3.3+ keeps the record in ``task_state_store``; older versions keep it for one try only.

Over 400 lines because it is one Airflow concept with many arguments, each checked at DAG parse with a
message of its own; the decisions themselves live in :mod:`~airflow_provider_noxus.run_identity`,
:mod:`~airflow_provider_noxus.wait` and :mod:`~airflow_provider_noxus.run_result`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus import protocol
from airflow_provider_noxus._compat import AIRFLOW_V_3_3_PLUS, AirflowException, BaseOperator
from airflow_provider_noxus.assets import tell_outlets_of_run
from airflow_provider_noxus.exceptions import (
    NoxusConfigurationError,
    NoxusError,
    NoxusNotFoundError,
    NoxusProtocolError,
    NoxusRunError,
    NoxusSyncEndpointTimeout,
    shorten,
)
from airflow_provider_noxus.files import NoxusFile, check_http_url, is_templated, resolve_file_inputs
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.links.noxus import NoxusRunLink
from airflow_provider_noxus.outputs import check_output_model
from airflow_provider_noxus.protocol import SYNC_ENDPOINT_TIMEOUT_S, NoxusRunStatus
from airflow_provider_noxus.run_identity import (
    Action,
    Decision,
    RunLedger,
    RunRecord,
    ServerView,
    decide,
    fingerprint,
    intent_fingerprint,
    look_up,
)
from airflow_provider_noxus.task_wait import DEFAULT_MAX_OUTPUT_BYTES, NoxusRunWaitMixin, seconds
from airflow_provider_noxus.wait import DEFAULT_POLL_INTERVAL_S, WaitOptions, check_timeout

if TYPE_CHECKING:
    from pydantic import BaseModel

    from airflow_provider_noxus._compat import Context

#: Steps of :func:`~airflow_provider_noxus.run_identity.decide` performed at most in one try (each
#: look-up, read or adoption is one; a handful are ever needed).
MAX_IDENTITY_STEPS = 20


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
        when it must (see :meth:`resume_reason`, and the README's "Ending in the triggerer").
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
    :param output_model: a pydantic model class the output of a completed run is validated against;
        the task then returns the validated model as JSON-safe data (``model_dump(mode="json")``). An
        output that does not fit fails the task at once, naming the fields, the run and its link
        (:mod:`airflow_provider_noxus.outputs`); clear the task to make a new run. Needs
        ``wait_for_completion=True``.
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
        end_from_trigger: bool = True,
        use_sync_endpoint: bool = False,
        wait_strategy: str = "auto",
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        on_human_feedback: str = "wait",
        output_keys_by_id: bool = False,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        allow_private_file_urls: bool | None = None,
        output_model: type[BaseModel] | None = None,
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
        if callback_url and not is_templated(callback_url):
            check_http_url(callback_url, what=f"{where}: callback_url", error=ValueError)
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
        self.output_model = check_output_model(output_model, where)
        if output_model is not None and not wait_for_completion:
            raise ValueError(
                f"{where}: output_model validates the run's output, which wait_for_completion=False does "
                "not wait for (the task returns the run id)."
            )
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
        #: Whether the run this try works on is proven this task's own (an adopted one is not).
        self._run_is_own = True

    # ---- execute: the task instance's run, found or created -------------------------------

    def execute(self, context: Context) -> Any:
        ledger = self._ledger(context)
        inputs = self._rendered_inputs()
        protocol.check_json_inputs(inputs, opaque=(NoxusFile,))
        if self.callback_url:  # checked again once rendered, before anything is sent
            check_http_url(
                self.callback_url,
                what=f"Task {self.task_id!r}: callback_url of workflow {self.workflow_id}",
                error=NoxusConfigurationError,
            )
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
        self._run_is_own = ledger.record is None or ledger.record.own
        if not self._run_is_own and self.deferrable and not ledger.durable:
            self.log.info(
                "Waiting for adopted Noxus run %s on the worker: before Airflow 3.3 a deferred task cannot "
                "carry over that this run is not to be stopped by it.",
                run_id,
            )
            self.deferrable = False
        self.push_run_link(context, run_id)
        if not self.wait_for_completion:
            self.delivered(context, run_id)
            return run_id
        return self.wait_for(context, run)

    def _ledger(self, context: Context) -> RunLedger:
        ledger = self._stored_ledger(context)
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
        """The run of an earlier try to carry on with, or None to create one (stopping the earlier run
        first when :func:`decide` says so)."""
        if ledger.record is not None and ledger.record.pending:
            # The try that sent that create is over: a run of it was made before this try started.
            ledger.save(ledger.record.ended_by(time.time()))
        decision, run = self._settle(ledger, intent, max_tries, same_try=False)
        if decision.action is Action.STOP_THEN_CREATE:
            assert decision.run_id is not None
            self.stop_run(decision.run_id, decision.reason)
        elif decision.action is Action.CREATE:
            if ledger.record is not None:
                self.log.info("%s: creating a new run.", _sentence(decision.reason))
        else:
            self.log.info("%s.", _sentence(decision.reason))
        return run

    def _settle(
        self, ledger: RunLedger, intent: str, max_tries: int | None, *, same_try: bool
    ) -> tuple[Decision, Mapping[str, Any] | None]:
        """Perform :func:`decide`'s look-ups, reads and adoptions until it answers with a run to carry
        on with (returned with the decision) or with a create (no run); raise on ``FAIL``.

        :param same_try: the pending create was sent by this try: an adopted run is carried on with as
            listed.
        """
        view = ServerView()
        for _ in range(MAX_IDENTITY_STEPS):
            decision = decide(ledger.record, intent, max_tries, view, now=time.time(), same_try=same_try)
            record = ledger.record
            if decision.action is Action.LOOK_UP:
                assert record is not None
                if decision.after:
                    time.sleep(decision.after)
                lookup = look_up(
                    lambda page, size: self.hook.list_runs(self.workflow_id, page=page, size=size),
                    record,
                    self.workflow_version_id,
                )
                if lookup.problem:
                    self.log.warning("Looking for the run of the lost create: %s.", lookup.problem)
                ledger.save(record.with_seen(lookup.candidate_ids))
                view = ServerView(lookup=lookup)
            elif decision.action is Action.ADOPT:
                assert record is not None and decision.run_id is not None and view.lookup is not None
                self.log.warning("%s.", _sentence(decision.reason))
                ledger.save(record.adopted(decision.run_id))
                if same_try:
                    listed = {str(run["id"]): run for run in view.lookup.candidates}
                    return decision, listed[decision.run_id]
                view = ServerView()
            elif decision.action is Action.READ_RUN:
                assert decision.run_id is not None
                try:
                    view = ServerView(run=self.hook.get_run(self.workflow_id, decision.run_id))
                except NoxusNotFoundError:
                    view = ServerView(run_gone=True)
            elif decision.action is Action.FAIL:
                note = "" if decision.candidates else f" {self._next_try_note(ledger)}"
                message = f"{_sentence(decision.reason)}.{note}"
                raise NoxusRunError(message, workflow_id=self.workflow_id)
            elif decision.action in (Action.WAIT, Action.RETURN_OUTPUT):
                return decision, view.run
            else:
                return decision, None
        raise NoxusRunError(
            f"Finding the run of task {self.task_id!r} took over {MAX_IDENTITY_STEPS} steps; this is a bug.",
            workflow_id=self.workflow_id,
        )

    @staticmethod
    def _next_try_note(ledger: RunLedger) -> str:
        if ledger.durable:
            return "The next try looks for it again before creating a new run."
        return "A retry creates a new run (Airflow before 3.3 cannot carry the search over)."

    def _create(
        self, ledger: RunLedger, intent: str, inputs: Mapping[str, Any], max_tries: int | None
    ) -> Mapping[str, Any]:
        """Create the run; a create whose answer is lost is looked up, never sent twice."""
        resolved = resolve_file_inputs(
            inputs, hook=self.hook, allow_private_urls=self.allow_private_file_urls
        )
        body = protocol.create_run_body(
            resolved,
            workflow_version_id=self.workflow_version_id,
            node_ids=self.node_ids,
            callback_url=None if self.use_sync_endpoint else self.callback_url,
        )
        settings = self.hook.settings
        sent_at = time.time()
        request_s = SYNC_ENDPOINT_TIMEOUT_S if self.use_sync_endpoint else settings.timeout
        record = RunRecord(
            workflow_id=self.workflow_id,
            intent=intent,
            sent_at=sent_at,
            input_fingerprint=fingerprint(body["input"]),
            max_tries=max_tries,
            answer_by=sent_at + settings.retry_policy.total_budget + request_s,
        )
        ledger.save(record)
        self._create_in_flight = record
        try:
            run = self._send_create(resolved)
        except NoxusError as error:
            if not protocol.may_have_created_run(error):
                raise
            ledger.save(record.failed_at(time.time()))
            self.log.warning(
                "The answer to the run creation was lost (%s); looking for the run it may have made.", error
            )
            try:
                adopted = self._settle(ledger, intent, max_tries, same_try=True)[1]
            except NoxusRunError as not_found:
                raise not_found from error
            assert adopted is not None, "a pending create of this try is adopted or fails"
            return adopted
        except BaseException:
            # Cut short (execution_timeout, an interrupt): a run it made cannot be told from another
            # task's, so it is not stopped; the record keeps the window for the next try's look-up.
            ledger.save(record.failed_at(time.time()))
            self.log.warning(
                "The task was interrupted while the run was being created; a run that create made cannot be "
                "proven to be this task's, so none is stopped. %s",
                self._next_try_note(ledger),
            )
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
            request = protocol.create_run_request(self.workflow_id, {})
        else:
            request = protocol.create_run_sync_request(self.workflow_id, {})
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
                endpoint=request.endpoint,
                workflow_id=self.workflow_id,
                detail=shorten(json.dumps(run, default=str)),
            )
        return run

    # ---- execute_complete and the result (the wait is in task_wait) -------------------------

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> Any:
        if isinstance(event, Mapping):
            self._active_run_id = str(event["run_id"])
        else:  # a task the trigger ended, resumed all the same (``airflow dags test``)
            self._active_run_id = self.waited_run_id(context)
        record = self._stored_ledger(context).record
        self._run_is_own = record is None or record.run_id != self._active_run_id or record.own
        return super().execute_complete(context, event)

    def may_stop_run(self, run_id: str) -> bool:
        """A run adopted after a lost create answer, not proven this task's own, is never stopped."""
        return self._run_is_own

    @staticmethod
    def _stored_ledger(context: Context) -> RunLedger:
        return RunLedger(context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None)  # type: ignore[call-overload]

    def delivered(self, context: Context, run_id: str) -> None:
        """Mark the run as delivered: a later try of this task instance (a clear) makes a new run."""
        ledger = self._stored_ledger(context)
        if ledger.record is not None and ledger.record.run_id == run_id:
            ledger.save(ledger.record.as_delivered())
        tell_outlets_of_run(self, context, run_id)

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
        of the create), the run is stopped as soon as the create answers. A create cut short (by
        ``execution_timeout``) gets no answer: its run cannot be proven to be this task's and is not
        stopped (the next try finds it in the run list). An adopted run is never stopped.
        """
        if not self.cancel_on_kill:
            return
        self._killed = True
        if self._active_run_id:
            self.stop_run(self._active_run_id, "task killed")
        elif self._create_in_flight is not None:
            self.log.info("The task was killed during the run creation: the run is stopped once made.")


def _sentence(text: str) -> str:
    """``text`` with its first letter in capitals, for a log line or an error."""
    return text[:1].upper() + text[1:]
