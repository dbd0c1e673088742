"""NoxusRunSensor: wait for a Noxus run created elsewhere and return its output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus._compat import BaseSensorOperator, PokeReturnValue
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.links.noxus import NoxusRunLink
from airflow_provider_noxus.operators.noxus import DEFAULT_MAX_OUTPUT_BYTES, NoxusRunWaitMixin
from airflow_provider_noxus.protocol import TERMINAL_STATUSES, NoxusRunStatus
from airflow_provider_noxus.triggers.noxus import validate_wait_options

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Context


class NoxusRunSensor(NoxusRunWaitMixin, BaseSensorOperator):
    """Wait for a Noxus run (started by a fire-and-forget operator or outside Airflow); return its output.

    The sensor does not own the run: on timeout, kill or refused feedback it fails but leaves the
    run as it is.

    :param run_id: the run to wait for. (templated)
    :param workflow_id: its workflow. (templated)
    :param noxus_conn_id: the Noxus connection.
    :param deferrable: wait in the triggerer (default); False pokes (``mode`` poke or reschedule).
    :param poll_interval: seconds between status checks; the ``poke_interval`` in poke mode.
    :param wait_strategy: ``stream``, ``poll`` or ``auto`` (deferrable mode).
    :param on_human_feedback: ``wait`` while the run awaits human feedback, or ``fail``.
    :param max_output_bytes: largest output (JSON) returned into XCom.
    """

    template_fields: Sequence[str] = ("run_id", "workflow_id")
    operator_extra_links = (NoxusRunLink(),)
    owns_run = False

    def __init__(
        self,
        *,
        run_id: str,
        workflow_id: str,
        noxus_conn_id: str = NoxusHook.default_conn_name,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        wait_strategy: str = "auto",
        on_human_feedback: str = "wait",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        **kwargs: Any,
    ) -> None:
        validate_wait_options(
            wait_strategy=wait_strategy, on_human_feedback=on_human_feedback, poll_interval=poll_interval
        )
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        if not run_id or not workflow_id:
            raise ValueError(f"Task {self.task_id!r}: run_id and workflow_id are required.")
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.noxus_conn_id = noxus_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_strategy = wait_strategy
        self.on_human_feedback = on_human_feedback
        self.max_output_bytes = max_output_bytes
        self.cancel_on_kill = False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        return self.wait_for(context, self.hook.get_run(self.workflow_id, self.run_id), deferrable=True)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        status_value = self.hook.get_run_status(self.run_id).get("status")
        status = NoxusRunStatus.parse(status_value)
        if status is None:
            self.log.warning(
                "Noxus run %s reports the unknown status %r; still waiting.", self.run_id, status_value
            )
            return False
        refuses_feedback = (
            status is NoxusRunStatus.AWAITING_HUMAN_FEEDBACK and self.on_human_feedback == "fail"
        )
        if status not in TERMINAL_STATUSES and not refuses_feedback:
            self.log.info("Noxus run %s is %s.", self.run_id, status.value)
            return False
        return PokeReturnValue(
            is_done=True, xcom_value=self.finish(self.hook.get_run(self.workflow_id, self.run_id))
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The run waited for, for OpenLineage (see :mod:`airflow_provider_noxus.openlineage`)."""
        from airflow_provider_noxus.openlineage import noxus_run_lineage

        return noxus_run_lineage(self, run_id=self.run_id)
