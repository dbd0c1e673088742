"""NoxusRunSensor: wait for a Noxus run created elsewhere and return its output."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus._compat import (
    AIRFLOW_V_3_3_PLUS,
    BaseSensorOperator,
    PokeReturnValue,
)
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.links.noxus import NoxusRunLink
from airflow_provider_noxus.task_wait import DEFAULT_MAX_OUTPUT_BYTES, NoxusRunWaitMixin
from airflow_provider_noxus.wait import DEFAULT_POLL_INTERVAL_S, WaitOptions, judge_run

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context


class NoxusRunSensor(NoxusRunWaitMixin, BaseSensorOperator):
    """Wait for a Noxus run (started by a fire-and-forget operator or outside Airflow); return its output.

    The sensor does not own the run: on timeout, kill or refused feedback it fails but leaves the
    run as it is.

    With ``start_from_trigger=True`` the sensor uses no worker at all: the scheduler defers it straight
    to the triggerer, whose trigger ends it (success with the output, or failure). Its templated fields
    are then rendered in the triggerer, which Airflow does from 3.3 on; mapped sensors start on a
    worker all the same (Airflow 3.3 does not start mapped tasks from the triggerer), and the sensor's
    ``timeout`` is Airflow's own deferral timeout.

    :param run_id: the run to wait for. (templated)
    :param workflow_id: its workflow. (templated)
    :param noxus_conn_id: the Noxus connection. (templated)
    :param deferrable: wait in the triggerer (default); False pokes (``mode`` poke or reschedule).
    :param end_from_trigger: deferred, the trigger ends the task instead of resuming it on a worker.
    :param poll_interval: seconds between status checks; the ``poke_interval`` in poke mode.
    :param wait_strategy: ``stream``, ``poll`` or ``auto`` (deferrable mode).
    :param on_human_feedback: ``wait`` while the run awaits human feedback, or ``fail``.
    :param max_output_bytes: largest output (JSON) returned into XCom.
    :param start_from_trigger: start in the triggerer, from the scheduler, with no worker.
    """

    template_fields: Sequence[str] = ("run_id", "workflow_id", "noxus_conn_id")
    operator_extra_links = (NoxusRunLink(),)

    def __init__(
        self,
        *,
        run_id: str,
        workflow_id: str,
        noxus_conn_id: str = NoxusHook.default_conn_name,
        deferrable: bool = True,
        end_from_trigger: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        wait_strategy: str = "auto",
        on_human_feedback: str = "wait",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        where = f"Task {kwargs.get('task_id')!r}"
        try:
            wait_options = WaitOptions(
                strategy=wait_strategy, poll_interval=poll_interval, on_human_feedback=on_human_feedback
            )
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        kwargs.setdefault("poke_interval", wait_options.poll_interval)
        super().__init__(**kwargs)
        if not run_id or not workflow_id:
            raise ValueError(f"{where}: run_id and workflow_id are required.")
        self.wait_options = wait_options
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.noxus_conn_id = noxus_conn_id
        self.deferrable = deferrable
        self.ends_in_triggerer = end_from_trigger  # not ``end_from_trigger``: see NoxusRunOperator
        self.max_output_bytes = max_output_bytes
        self.cancel_on_kill = False
        self.start_from_trigger = start_from_trigger
        if start_from_trigger:
            self._start_in_triggerer(where)

    def _start_in_triggerer(self, where: str) -> None:
        """Set the trigger the scheduler starts this sensor with (``start_from_trigger=True``)."""
        if not (self.deferrable and self.ends_in_triggerer):
            raise ValueError(
                f"{where}: start_from_trigger=True needs deferrable=True and end_from_trigger=True."
            )
        templated = [name for name in self.template_fields if "{{" in str(getattr(self, name))]
        if templated and not AIRFLOW_V_3_3_PLUS:
            raise ValueError(
                f"{where}: start_from_trigger=True with templated {', '.join(templated)} needs Airflow 3.3+, "
                "which renders templates in the triggerer; give plain values or drop start_from_trigger."
            )
        from airflow_provider_noxus._compat import (
            StartTriggerArgs,  # only a sensor that starts there needs it
        )

        trigger = self.make_trigger(self.run_id, deadline=None, push_run_link=True)
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{type(trigger).__module__}.{type(trigger).__qualname__}",
            trigger_kwargs=trigger.serialize()[1],
            next_method="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def may_stop_run(self, run_id: str) -> bool:
        """Never: the run is someone else's."""
        return False

    def execute(self, context: Context) -> Any:
        self.push_run_link(context, self.run_id)
        if not self.deferrable:
            return super().execute(context)
        return self.wait_for(context, self.hook.get_run(self.workflow_id, self.run_id))

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One status read; done when the wait would end on it."""
        run = self.hook.get_run_status(self.run_id)
        outcome = judge_run(run, self.workflow_id, self.wait_options, self.log)
        if outcome is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.complete(context, outcome))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The run waited for, for OpenLineage (see :mod:`airflow_provider_noxus.openlineage`)."""
        from airflow_provider_noxus.openlineage import noxus_run_lineage

        return noxus_run_lineage(self, run_id=self.run_id)
