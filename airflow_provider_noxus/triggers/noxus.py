"""NoxusRunTrigger: waits for a Noxus run in the triggerer, by event stream or by polling.

The trigger only reads the run (and stops it when the task is killed); it never creates one. The wait
itself is :mod:`airflow_provider_noxus.wait`, the same as a blocking wait on a worker; the trigger
chooses whether to stream, reads statuses through the watcher its workflow's triggers share
(:mod:`~airflow_provider_noxus.triggers.status_watcher`), runs the wait in the triggerer's event loop
and emits exactly one event: the :class:`~airflow_provider_noxus.wait.WaitOutcome`, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from airflow_provider_noxus._compat import (
    AirflowNotFoundException,
    BaseTrigger,
    TriggerEvent,
    atask_instance_state,
)
from airflow_provider_noxus.connection import CONNECTION_CACHE
from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import check_id
from airflow_provider_noxus.triggers.status_watcher import WatcherSeat
from airflow_provider_noxus.wait import OUTCOME_ERROR, WaitOptions, WaitOutcome

#: ``auto`` streams while fewer triggers than this follow an event stream in this process, else polls.
#: Streaming wakes within milliseconds and costs less CPU per run than polling, but holds one socket
#: (a file descriptor here and a connection on the server) per run for the run's whole life; 500
#: streams and the request pool fit a default-capacity triggerer (1,000 triggers) under a common
#: 1,024 open-files limit. See BENCHMARKS.md, "The decision for auto".
AUTO_STREAM_MAX_CONCURRENT = 500
#: Bound of the stop request sent by :meth:`NoxusRunTrigger.on_kill`.
ON_KILL_TIMEOUT_S = 20.0


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
        """A streaming slot for a wait with ``strategy``: ``stream`` always gets one, ``auto`` while
        fewer than :func:`auto_stream_limit` triggers stream, ``poll`` never. Freed on every exit."""
        held = strategy == "stream" or (strategy == "auto" and cls.active < auto_stream_limit())
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
    """Wait for a Noxus run to end, in the triggerer; emit one event with the outcome.

    :param noxus_conn_id: the Noxus connection (read asynchronously when the trigger runs).
    :param workflow_id: the run's workflow.
    :param run_id: the run to wait for.
    :param deadline: wall-clock time (epoch seconds) at which the wait gives up with a ``timeout``
        event; None waits without limit.
    :param poll_interval: seconds between status checks when polling.
    :param wait_strategy: ``stream`` (follow the run's event stream, falling back to polling when
        streaming keeps failing), ``poll``, or ``auto`` (stream while fewer than
        :func:`auto_stream_limit` triggers of this process stream, else poll).
    :param last_event_id: event-stream id to resume after.
    :param on_human_feedback: ``wait`` keeps waiting while the run awaits human feedback; ``fail``
        ends the wait with a ``failed`` event.
    :param cancel_on_kill: stop the run when a user kills the deferred task (Airflow 3.3+).
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
        poll_interval: float = 5.0,
        wait_strategy: str = "auto",
        last_event_id: str | None = None,
        on_human_feedback: str = "wait",
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.options = WaitOptions(
            strategy=wait_strategy, poll_interval=poll_interval, on_human_feedback=on_human_feedback
        )
        self.noxus_conn_id = noxus_conn_id
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.deadline = deadline
        self.last_event_id = last_event_id
        self.cancel_on_kill = cancel_on_kill

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
                "last_event_id": self.last_event_id,
                "on_human_feedback": self.options.on_human_feedback,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for the run and yield one event; every client opened here is closed on every path."""
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
                            last_event_id=self.last_event_id,
                            on_polling=slot.release,
                            watch_status=seat if self.shared_status_checks else None,
                        )
        except AirflowNotFoundException as error:
            outcome = self._error(f"Noxus connection {self.noxus_conn_id!r} not found: {error}", error)
        except NoxusError as error:
            outcome = self._error(f"Stopped waiting for Noxus run {self.run_id}: {error}", error)
        if outcome.error_type == NoxusAuthError.__name__:
            CONNECTION_CACHE.forget(self.noxus_conn_id)
        yield TriggerEvent(outcome.to_event())

    def _error(self, message: str, error: BaseException) -> WaitOutcome:
        return WaitOutcome(
            OUTCOME_ERROR,
            self.run_id,
            self.workflow_id,
            message,
            last_event_id=self.last_event_id,
            error_type=type(error).__name__ if isinstance(error, NoxusError) else None,
        )

    async def on_kill(self) -> None:
        """Stop the run when a user kills the deferred task (Airflow 3.3+); best effort, bounded.

        Airflow 3.3 also calls this when a trigger merely moves to another triggerer (a triggerer
        thought dead, apache/airflow#73454): while the task is still deferred, the run is left to the
        trigger that took it over.
        """
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: Noxus run %s is left running.", self.run_id)
            return
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
                await client.a_stop_run(self.run_id, workflow_id=self.workflow_id)

        try:
            await asyncio.wait_for(stop(), timeout=ON_KILL_TIMEOUT_S)
        except Exception as error:
            self.log.warning(
                "Could not stop Noxus run %s of workflow %s: %s", self.run_id, self.workflow_id, error
            )
        else:
            self.log.info("Asked Noxus to stop run %s of workflow %s.", self.run_id, self.workflow_id)
