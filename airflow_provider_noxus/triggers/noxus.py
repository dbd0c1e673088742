"""NoxusRunTrigger: waits for a Noxus run in the triggerer, by event stream or by polling.

The trigger only reads the run (and stops it when the task is killed, or, ending the task, on its
timeout or refused feedback); it never creates one. The wait itself is
:mod:`airflow_provider_noxus.wait`, the same as a blocking wait on a worker; the trigger takes a
streaming slot (:func:`~airflow_provider_noxus.wait.streams`), reads statuses through the watcher its
workflow's triggers share (:mod:`~airflow_provider_noxus.triggers.status_watcher`), runs the wait in
the triggerer's event loop and emits exactly one event, whatever happens:

- with ``end_from_trigger``, the task's end: :class:`TaskSuccessEvent` once the output is pushed as the
  task's return value (and, for a task started here, the run's id and link; through the Execution API
  on Airflow 3, see :meth:`NoxusRunTrigger._xcoms_of_event`), or :class:`TaskFailedEvent` after logging the
  error to the task's log; the result is :func:`~airflow_provider_noxus.run_result.task_result`, as
  on a worker. An error that must fail the task without its retries (a refused key, an output over
  the size limit), and any failure on Airflow 2 (whose failed event skips the retries), resumes the
  task on a worker instead, which raises it there;
- else the :class:`~airflow_provider_noxus.wait.WaitOutcome`, for the task's ``execute_complete``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from airflow_provider_noxus._compat import (
    AIRFLOW_V_3_0_PLUS,
    AirflowFailException,
    AirflowNotFoundException,
    BaseTrigger,
    TaskFailedEvent,
    TaskSuccessEvent,
    TriggerEvent,
    atask_instance_state,
)
from airflow_provider_noxus.connection import CONNECTION_CACHE
from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusError
from airflow_provider_noxus.hooks.noxus import NoxusAsyncClient, NoxusHook
from airflow_provider_noxus.links.noxus import run_link_xcoms
from airflow_provider_noxus.outputs import import_model, output_check
from airflow_provider_noxus.protocol import check_id
from airflow_provider_noxus.run_result import (
    Pause,
    ReadRun,
    ResultRules,
    ResultStep,
    StopRun,
    arun_steps,
    task_result,
)
from airflow_provider_noxus.triggers.status_watcher import WatcherSeat
from airflow_provider_noxus.wait import (
    DEFAULT_POLL_INTERVAL_S,
    OUTCOME_SUCCESS,
    WaitOptions,
    WaitOutcome,
    error_outcome,
    streams,
)

#: ``auto`` streams while fewer triggers than this follow an event stream in this process, else polls.
#: Streaming wakes within milliseconds and costs less CPU per run than polling, but holds one socket
#: (a file descriptor here and a connection on the server) per run for the run's whole life; 500
#: streams and the request pool fit a default-capacity triggerer (1,000 triggers) under a common
#: 1,024 open-files limit. See BENCHMARKS.md, "The decision for auto".
AUTO_STREAM_MAX_CONCURRENT = 500
#: Bound of a stop request sent by the trigger (on kill, timeout or refused feedback).
ON_KILL_TIMEOUT_S = 20.0
#: Bound of one XCom push through the triggerer's supervisor; past it the task resumes on a worker.
XCOM_PUSH_TIMEOUT_S = 60.0
#: Stops started by :meth:`NoxusRunTrigger.on_kill` and not done yet (each bounded).
_STOPS_IN_FLIGHT: set[asyncio.Future[None]] = set()
#: The XCom key of a task's return value.
RETURN_VALUE_KEY = "return_value"


def auto_stream_limit() -> int:
    """How many triggers of this process ``auto`` lets stream: :data:`AUTO_STREAM_MAX_CONCURRENT`, and
    never more than half the process's open-files limit."""
    try:
        import resource

        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return AUTO_STREAM_MAX_CONCURRENT
    if soft_limit == resource.RLIM_INFINITY:
        return AUTO_STREAM_MAX_CONCURRENT
    return max(0, min(AUTO_STREAM_MAX_CONCURRENT, soft_limit // 2))


class StreamingTriggers:
    """Process-wide count of triggers following an event stream (they all share one event loop)."""

    active = 0

    @classmethod
    @contextlib.contextmanager
    def slot(cls, strategy: str) -> Iterator[_StreamSlot]:
        """A streaming slot for a wait with ``strategy`` when it :func:`streams`, ``auto`` while fewer
        than :func:`auto_stream_limit` triggers stream. Freed on every exit."""
        held = streams(strategy, room=cls.active < auto_stream_limit())
        slot = _StreamSlot(held)
        if held:
            cls.active += 1
        try:
            yield slot
        finally:
            slot.release()


class _StreamSlot:
    """One trigger's place among the streaming ones; :meth:`release` is idempotent."""

    def __init__(self, held: bool) -> None:
        self.held = held

    def release(self) -> None:
        if self.held:
            self.held = False
            StreamingTriggers.active -= 1


class NoxusRunTrigger(BaseTrigger):
    """Wait for a Noxus run to end, in the triggerer; emit one event: the task's end, or the outcome.

    :param noxus_conn_id: the Noxus connection (read asynchronously when the trigger runs).
    :param workflow_id: the run's workflow.
    :param run_id: the run to wait for.
    :param deadline: wall-clock time (epoch seconds) at which the wait gives up with a ``timeout``
        event; None waits without limit.
    :param poll_interval: seconds between status checks when polling.
    :param wait_strategy: ``stream`` (follow the run's event stream, falling back to polling when
        streaming keeps failing), ``poll``, or ``auto`` (stream while fewer than
        :func:`auto_stream_limit` triggers of this process stream, else poll).
    :param last_event_id: accepted from triggers serialized by 0.1.0, and ignored.
    :param on_human_feedback: ``wait`` keeps waiting while the run awaits human feedback; ``fail``
        ends the wait with a ``failed`` event.
    :param cancel_on_kill: stop the run when a user kills the deferred task (Airflow 3.3+).
    :param end_from_trigger: end the task here (success with the output, or failure) instead of
        resuming it on a worker.
    :param may_stop_run: ending the task, stop the run on timeout or refused feedback.
    :param max_output_bytes: ending the task, the largest output (JSON) it may return.
    :param limits: ending the task, the wait's limits in words, for a timeout's message.
    :param push_output: ending the task, push the output as its return value (``do_xcom_push``).
    :param push_run_link: ending the task, push the run's id and link to XCom (a task started in the
        triggerer; a task that ran on a worker pushed them there, and Airflow stores a trigger's XComs
        JSON-encoded once more).
    :param output_model: ending the task, the import path of the pydantic model its output must fit
        (:mod:`~airflow_provider_noxus.outputs`); a model the triggerer cannot import resumes the task
        on a worker.
    """

    #: Read statuses through the watcher shared by the triggers of a workflow (one list request for up
    #: to 100 runs); False reads each run's own status (one request per run per poll interval).
    shared_status_checks: bool = True

    def __init__(
        self,
        noxus_conn_id: str,
        workflow_id: str,
        run_id: str,
        deadline: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        wait_strategy: str = "auto",
        last_event_id: str | None = None,
        on_human_feedback: str = "wait",
        cancel_on_kill: bool = True,
        end_from_trigger: bool = False,
        may_stop_run: bool = False,
        max_output_bytes: int | None = None,
        limits: str = "no limit set",
        push_output: bool = True,
        push_run_link: bool = False,
        output_model: str | None = None,
    ) -> None:
        super().__init__()
        self.options = WaitOptions(
            strategy=wait_strategy, poll_interval=poll_interval, on_human_feedback=on_human_feedback
        )
        self.noxus_conn_id = noxus_conn_id
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.deadline = deadline
        self.cancel_on_kill = cancel_on_kill
        self.end_from_trigger = end_from_trigger
        self.may_stop_run = may_stop_run
        self.max_output_bytes = max_output_bytes
        self.limits = limits
        self.push_output = push_output
        self.push_run_link = push_run_link
        self.output_model = output_model

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "noxus_conn_id": self.noxus_conn_id,
                "workflow_id": self.workflow_id,
                "run_id": self.run_id,
                "deadline": self.deadline,
                "poll_interval": self.options.poll_interval,
                "wait_strategy": self.options.strategy,
                "on_human_feedback": self.options.on_human_feedback,
                "cancel_on_kill": self.cancel_on_kill,
                "end_from_trigger": self.end_from_trigger,
                "may_stop_run": self.may_stop_run,
                "max_output_bytes": self.max_output_bytes,
                "limits": self.limits,
                "push_output": self.push_output,
                "push_run_link": self.push_run_link,
                "output_model": self.output_model,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for the run and yield one event; every client opened here is closed on every path."""
        task_end: TriggerEvent | None = None
        try:
            check_id(self.run_id)
            check_id(self.workflow_id)
            async with NoxusHook(self.noxus_conn_id).async_client() as client:
                seat = WatcherSeat(
                    client.settings, self.workflow_id, self.run_id, self.options.poll_interval, self.log
                )
                async with contextlib.aclosing(seat):
                    with StreamingTriggers.slot(self.options.strategy) as slot:
                        outcome = await client.a_wait(
                            self.workflow_id,
                            self.run_id,
                            self.options,
                            deadline=self.deadline,
                            log=self.log,
                            stream=slot.held,
                            on_polling=slot.release,
                            watch_status=seat if self.shared_status_checks else None,
                        )
                if self.end_from_trigger:
                    task_end = await self._end_task(client, outcome)
        except AirflowNotFoundException as error:
            message = f"Noxus connection {self.noxus_conn_id!r} not found: {error}"
            outcome = error_outcome(self.run_id, self.workflow_id, error, message=message)
        except NoxusError as error:
            outcome = error_outcome(self.run_id, self.workflow_id, error)
        if outcome.error_type == NoxusAuthError.__name__:
            CONNECTION_CACHE.forget(self.noxus_conn_id)
        yield task_end or TriggerEvent(outcome.to_event())

    async def _end_task(self, client: NoxusAsyncClient, outcome: WaitOutcome) -> TriggerEvent | None:
        """The event that ends the task for ``outcome``, or None to resume it on a worker (which then
        fails it the way it must: see the module's docstring). The error is logged to the task's log."""
        if not AIRFLOW_V_3_0_PLUS and outcome.status != OUTCOME_SUCCESS:
            self.log.info(
                "The task resumes on a worker to fail: Airflow 2 skips the retries of a task failed here."
            )
            return None
        run_url = client.run_url(self.workflow_id, self.run_id)
        model = None
        if self.output_model:
            try:  # an import reads files: not on the event loop
                model = await asyncio.to_thread(import_model, self.output_model)
            except Exception as error:
                self.log.info("The task resumes on a worker to check its output: %s", error)
                return None
        rules = ResultRules(
            run_url=run_url,
            limits=self.limits,
            may_stop=self.may_stop_run,
            max_output_bytes=self.max_output_bytes,
            noxus_conn_id=self.noxus_conn_id,
            check_output=output_check(
                model, workflow_id=self.workflow_id, run_id=self.run_id, run_url=run_url
            ),
        )

        async def perform(step: ResultStep) -> Any:
            if isinstance(step, StopRun):
                return await self._stop(client, step.reason)
            if isinstance(step, Pause):
                return await asyncio.sleep(step.seconds)
            assert isinstance(step, ReadRun)
            return await client.a_get_run(self.workflow_id, self.run_id)

        try:
            output = await arun_steps(task_result(outcome, rules), perform)
        except NoxusError as error:
            if isinstance(error, AirflowFailException) or not AIRFLOW_V_3_0_PLUS:
                self.log.info("The task resumes on a worker to fail without retries: %s", error)
                return None
            self.log.error("%s", error)
            link = run_link_xcoms(self.run_id, run_url) if self.push_run_link else {}
            try:
                return TaskFailedEvent(xcoms=await self._xcoms_of_event(link))
            except Exception as push_error:  # the task fails all the same, without its run's link
                self.log.warning("The run's id and link could not be pushed to XCom: %s", push_error)
                return TaskFailedEvent()
        xcoms: dict[str, Any] = run_link_xcoms(self.run_id, run_url) if self.push_run_link else {}
        if self.push_output:
            xcoms[RETURN_VALUE_KEY] = output
        try:
            event_xcoms = await self._xcoms_of_event(xcoms)
        except Exception as error:  # the API server's answer: a worker pushes them instead
            self.log.info("The task resumes on a worker to push its output to XCom: %s", error)
            return None
        self.log.info("Noxus run %s completed; the task ends here with its output.", self.run_id)
        return TaskSuccessEvent(xcoms=event_xcoms)

    async def _xcoms_of_event(self, xcoms: dict[str, Any]) -> dict[str, Any] | None:
        """Push ``xcoms`` as a worker would, and return what the end event must carry itself.

        Airflow 3 writes an end event's XComs JSON-encoded once more than a worker's, so that tasks
        pulling them get strings (``'{"text": ...}'``, ``'"<run id>"'``); they are sent through the
        Execution API instead, as a task's own pushes are. Airflow 2 reads an event's XComs back as they
        were: they stay in the event.
        """
        if not xcoms or not AIRFLOW_V_3_0_PLUS:
            return xcoms or None
        from airflow.sdk.execution_time.xcom import XCom

        ti = self.task_instance
        if ti is None:
            raise NoxusError("the trigger runs outside a triggerer: no task instance to push XComs for")
        for key, value in xcoms.items():
            push = XCom.aset(
                key, value, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index
            )
            await asyncio.wait_for(push, XCOM_PUSH_TIMEOUT_S)
        return None

    async def on_kill(self) -> None:
        """Stop the run when a user kills the deferred task (Airflow 3.3+); best effort, bounded.

        Airflow 3.3 also calls this when a trigger merely moves to another triggerer (a triggerer
        thought dead, apache/airflow#73454): while the task is still deferred, the run is left to the
        trigger that took it over.

        Airflow cancels the trigger again at every sync with its supervisor (about each second)
        until it ends, which cancels ``on_kill`` itself when it takes longer than that (a supervisor
        busy with other tasks' ends answers late): the stop runs in a task of its own that those
        cancellations leave going, bounded by :data:`ON_KILL_TIMEOUT_S`.
        """
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: Noxus run %s is left running.", self.run_id)
            return
        stopping = asyncio.ensure_future(self._stop_unless_moved())
        _STOPS_IN_FLIGHT.add(stopping)  # held until done: the loop keeps only a weak reference
        stopping.add_done_callback(_STOPS_IN_FLIGHT.discard)
        await asyncio.shield(stopping)

    async def _stop_unless_moved(self) -> None:
        """:meth:`on_kill`'s work: read the task's state, then stop the run unless the task is deferred."""
        with contextlib.suppress(asyncio.TimeoutError):
            state = await asyncio.wait_for(atask_instance_state(self.task_instance), ON_KILL_TIMEOUT_S / 2)
            if state == "deferred":
                self.log.warning(
                    "Noxus run %s is left running: its task is still deferred, so this trigger was moved to "
                    "another triggerer, not killed by a user (apache/airflow#73454).",
                    self.run_id,
                )
                return

        async def stop() -> None:
            async with NoxusHook(self.noxus_conn_id).async_client() as client:
                await self._stop(client, "task killed")

        try:  # the connection's read too is bounded, within Airflow's on_kill_timeout
            await asyncio.wait_for(stop(), timeout=ON_KILL_TIMEOUT_S)
        except Exception as error:
            self.log.warning(
                "Could not stop Noxus run %s of workflow %s: %s", self.run_id, self.workflow_id, error
            )

    async def _stop(self, client: NoxusAsyncClient, reason: str) -> None:
        """Ask Noxus to stop the run; best effort, bounded by :data:`ON_KILL_TIMEOUT_S`, errors logged."""
        try:
            await asyncio.wait_for(
                client.a_stop_run(self.run_id, workflow_id=self.workflow_id), timeout=ON_KILL_TIMEOUT_S
            )
        except Exception as error:
            self.log.warning(
                "Could not stop Noxus run %s of workflow %s (%s): %s",
                self.run_id,
                self.workflow_id,
                reason,
                error,
            )
        else:
            self.log.info(
                "Asked Noxus to stop run %s of workflow %s (%s).", self.run_id, self.workflow_id, reason
            )
