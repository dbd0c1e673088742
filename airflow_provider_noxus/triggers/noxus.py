"""NoxusRunTrigger: waits for a Noxus run in the triggerer, by event stream or by polling.

The trigger only reads the run (and stops it when the task is killed); it never creates one.
It emits exactly one event, whatever happens, in the schema built by :func:`run_event`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import aclosing
from typing import Any, TypeVar, cast

from airflow_provider_noxus._compat import AirflowNotFoundException, BaseTrigger, TriggerEvent
from airflow_provider_noxus.exceptions import NoxusError, NoxusTLSError
from airflow_provider_noxus.hooks.noxus import (
    MAX_STREAM_FAILURES,
    TRANSIENT_ERRORS,
    NoxusAsyncClient,
    NoxusHook,
)
from airflow_provider_noxus.protocol import NoxusRunStatus, RetryPolicy, RunEvent, backoff_seconds

WAIT_STRATEGIES = ("stream", "poll", "auto")
HUMAN_FEEDBACK_ACTIONS = ("wait", "fail")
#: ``auto`` streams while fewer triggers than this follow an event stream in this process, else polls.
#: Streaming wakes within milliseconds and costs less CPU per run than polling, but holds one socket
#: (a file descriptor here and a connection on the server) per run for the run's whole life; 500
#: streams and the request pool fit a default-capacity triggerer (1,000 triggers) under a common
#: 1,024 open-files limit. See BENCHMARKS.md, "The decision for auto".
AUTO_STREAM_MAX_CONCURRENT = 500


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

#: Consecutive event-stream failures (errors, or drops with no new frame) before falling back to polling.
STREAM_FAILURES_BEFORE_POLLING = MAX_STREAM_FAILURES
#: Longest wait between two attempts after a transient error.
MAX_TRANSIENT_BACKOFF_S = 30.0
#: Bound of the stop request sent by :meth:`NoxusRunTrigger.on_kill`.
ON_KILL_TIMEOUT_S = 20.0

EVENT_SUCCESS = "success"
EVENT_FAILED = "failed"
EVENT_STOPPED = "stopped"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"

_T = TypeVar("_T")


def run_event(
    status: str,
    *,
    run_id: str,
    workflow_id: str,
    message: str,
    run_status: str | None = None,
    last_event_id: str | None = None,
) -> dict[str, Any]:
    """The payload of every event of :class:`NoxusRunTrigger`.

    :param status: ``success``, ``failed``, ``stopped``, ``timeout`` or ``error``.
    :param run_status: the run's own status when last seen (e.g. ``awaiting_human_feedback``).
    :param last_event_id: the last event-stream id seen, to resume a stream after it.
    """
    return {
        "status": status,
        "run_id": run_id,
        "workflow_id": workflow_id,
        "message": message,
        "run_status": run_status,
        "last_event_id": last_event_id,
    }


def validate_wait_options(*, wait_strategy: str, on_human_feedback: str, poll_interval: float) -> None:
    """Refuse bad wait options early (at DAG parse for operators and sensors), saying what is allowed."""
    if wait_strategy not in WAIT_STRATEGIES:
        raise ValueError(f"wait_strategy must be one of {WAIT_STRATEGIES}, got {wait_strategy!r}.")
    if on_human_feedback not in HUMAN_FEEDBACK_ACTIONS:
        raise ValueError(
            f"on_human_feedback must be one of {HUMAN_FEEDBACK_ACTIONS}, got {on_human_feedback!r}."
        )
    if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
        raise ValueError(f"poll_interval must be a number of seconds above 0, got {poll_interval!r}.")


def is_transient(error: BaseException) -> bool:
    """Whether waiting may go on after ``error`` (a TLS failure will not heal by itself)."""
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, NoxusTLSError)


class StreamingTriggers:
    """Process-wide count of triggers following an event stream (they all share one event loop)."""

    active = 0

    @classmethod
    def acquire(cls, *, limit: int | None) -> bool:
        """Count one more streaming trigger unless ``limit`` are already streaming."""
        if limit is not None and cls.active >= limit:
            return False
        cls.active += 1
        return True

    @classmethod
    def release(cls) -> None:
        cls.active -= 1


class RunProgressLogger:
    """Logs a run's progress: one line per run status change and per node start/finish/failure.

    Fed by status polls (:meth:`on_run`) or event-stream frames (:meth:`on_event`); streamed
    tokens never produce a line.

    :param log: where to write.
    :param run_id: the run, named in each line.
    """

    _NODE_WORDS = {"running": "started", "completed": "finished", "failed": "failed", "skipped": "skipped"}

    def __init__(self, log: logging.Logger | Any, run_id: str) -> None:
        self._log = log
        self._run_id = run_id
        self._status: str | None = None
        self._progress: Any = None
        self._nodes: dict[str, str] = {}
        self._unknown_statuses: set[str] = set()

    def on_run(self, run: Mapping[str, Any]) -> None:
        """A run object (poll): status, progress and the node lists of ``progress_details``."""
        self._set_progress(run.get("progress"))
        details = run.get("progress_details") or {}
        for key, node_status in (("running_nodes", "running"), ("executed_nodes", "completed")):
            for node_id in details.get(key) or ():
                self._node(str(node_id), node_status)
        self._set_status(run.get("status"))

    def on_event(self, event: RunEvent) -> None:
        """One event-stream frame."""
        data = event.data
        if event.type == "state":
            self.on_run(data)
        elif event.type == "content" and data.get("id"):
            self._node(str(data["id"]), str(data.get("status") or "running"))
        if event.workflow_status:
            self._set_status(event.workflow_status)

    def warn_unknown(self, status: str) -> None:
        """Warn once per status value this provider does not know."""
        if status not in self._unknown_statuses:
            self._unknown_statuses.add(status)
            self._log.warning(
                "Noxus run %s reports the unknown status %r; treating it as still running.",
                self._run_id,
                status,
            )

    def _set_progress(self, progress: Any) -> None:
        if isinstance(progress, (int, float)):
            self._progress = progress

    def _percent(self) -> str:
        return f"{self._progress}%" if self._progress is not None else "?%"

    def _set_status(self, status: Any) -> None:
        if status and status != self._status:
            self._status = str(status)
            self._log.info("Noxus run %s is %s (progress %s).", self._run_id, status, self._percent())

    def _node(self, node_id: str, status: str) -> None:
        if self._nodes.get(node_id) == status or (status == "running" and node_id in self._nodes):
            return
        self._nodes[node_id] = status
        word = self._NODE_WORDS.get(status, status)
        self._log.info(
            "Noxus run %s: node %s %s (progress %s).", self._run_id, node_id, word, self._percent()
        )


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
        validate_wait_options(
            wait_strategy=wait_strategy, on_human_feedback=on_human_feedback, poll_interval=poll_interval
        )
        self.noxus_conn_id = noxus_conn_id
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.deadline = deadline
        self.poll_interval = float(poll_interval)
        self.wait_strategy = wait_strategy
        self.last_event_id = last_event_id
        self.on_human_feedback = on_human_feedback
        self.cancel_on_kill = cancel_on_kill
        self._progress = RunProgressLogger(self.log, run_id)
        self._run_status: str | None = None
        self._backoff_policy = RetryPolicy(
            backoff_initial=self.poll_interval, backoff_max=max(self.poll_interval, MAX_TRANSIENT_BACKOFF_S)
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "noxus_conn_id": self.noxus_conn_id,
                "workflow_id": self.workflow_id,
                "run_id": self.run_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "wait_strategy": self.wait_strategy,
                "last_event_id": self.last_event_id,
                "on_human_feedback": self.on_human_feedback,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _event(self, status: str, message: str) -> dict[str, Any]:
        return run_event(
            status,
            run_id=self.run_id,
            workflow_id=self.workflow_id,
            message=message,
            run_status=self._run_status,
            last_event_id=self.last_event_id,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for the run and yield one event; every client opened here is closed on every path."""
        try:
            async with NoxusHook(self.noxus_conn_id).async_client() as client:
                event = await self._wait(client)
        except AirflowNotFoundException as error:
            event = self._event(EVENT_ERROR, f"Noxus connection {self.noxus_conn_id!r} not found: {error}")
        except NoxusError as error:
            event = self._event(EVENT_ERROR, f"Stopped waiting for Noxus run {self.run_id}: {error}")
        yield TriggerEvent(event)

    # ----------------------------------------------------------------------------------------
    # The wait
    # ----------------------------------------------------------------------------------------

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def _bounded(self, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable`` but no later than the deadline (asyncio.TimeoutError past it)."""
        remaining = self._remaining()
        if remaining is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, timeout=max(remaining, 0.0))

    async def _sleep(self, seconds: float) -> None:
        remaining = self._remaining()
        await asyncio.sleep(max(0.0, seconds if remaining is None else min(seconds, remaining)))

    def _judge(self, status_value: Any) -> dict[str, Any] | None:
        """The final event for this remote status, or None while the run goes on."""
        if not status_value:
            return None
        self._run_status = str(status_value)
        status = NoxusRunStatus.parse(status_value)
        if status is None:
            self._progress.warn_unknown(str(status_value))
            return None
        if status is NoxusRunStatus.COMPLETED:
            return self._event(EVENT_SUCCESS, f"Noxus run {self.run_id} completed.")
        if status is NoxusRunStatus.FAILED:
            return self._event(EVENT_FAILED, f"Noxus run {self.run_id} failed.")
        if status is NoxusRunStatus.STOPPED:
            return self._event(EVENT_STOPPED, f"Noxus run {self.run_id} was stopped.")
        if status is NoxusRunStatus.AWAITING_HUMAN_FEEDBACK and self.on_human_feedback == "fail":
            return self._event(
                EVENT_FAILED,
                f"Noxus run {self.run_id} paused awaiting human feedback and on_human_feedback='fail'. "
                "Use on_human_feedback='wait' to wait for the feedback instead.",
            )
        return None

    def _timeout_event(self) -> dict[str, Any]:
        return self._event(
            EVENT_TIMEOUT,
            f"Noxus run {self.run_id} of workflow {self.workflow_id} was still "
            f"{self._run_status or 'running'} at the wait's deadline.",
        )

    async def _wait(self, client: NoxusAsyncClient) -> dict[str, Any]:
        streaming = self.wait_strategy != "poll" and StreamingTriggers.acquire(
            limit=auto_stream_limit() if self.wait_strategy == "auto" else None
        )
        stream_failures = 0
        transient_errors = 0
        try:
            while True:
                remaining = self._remaining()
                if remaining is not None and remaining <= 0:
                    return self._timeout_event()
                seen_before = self.last_event_id
                try:
                    if streaming:
                        final = await self._bounded(self._follow_stream(client))
                    else:
                        final = await self._bounded(self._poll_once(client))
                except (asyncio.TimeoutError, *TRANSIENT_ERRORS) as error:
                    remaining = self._remaining()
                    if remaining is not None and remaining <= 0:
                        return self._timeout_event()
                    if isinstance(error, NoxusError) and not is_transient(error):
                        raise
                    transient_errors += 1
                    stream_failures += 1 if streaming else 0
                    delay = backoff_seconds(self._backoff_policy, transient_errors, error)
                    self.log.warning(
                        "Noxus run %s: transient error while waiting (%s); trying again in %.1f s.",
                        self.run_id,
                        error or type(error).__name__,
                        delay,
                    )
                    final = None
                else:
                    transient_errors = 0
                    delay = 0.0 if streaming else self.poll_interval
                    if streaming and final is None:
                        # The stream closed before the final frame: resume at once after progress,
                        # else count a failure and back off.
                        stream_failures = 0 if self.last_event_id != seen_before else stream_failures + 1
                        if stream_failures:
                            delay = backoff_seconds(
                                self._backoff_policy, stream_failures, EOFError("event stream closed early")
                            )
                if final is not None:
                    return final
                if streaming and stream_failures >= STREAM_FAILURES_BEFORE_POLLING:
                    self.log.warning(
                        "Noxus run %s: the event stream failed %d times in a row; polling every %.1f s now.",
                        self.run_id,
                        stream_failures,
                        self.poll_interval,
                    )
                    StreamingTriggers.release()
                    streaming = False
                await self._sleep(delay)
        finally:
            if streaming:
                StreamingTriggers.release()

    async def _poll_once(self, client: NoxusAsyncClient) -> dict[str, Any] | None:
        run = await client.a_get_run_status(self.run_id)
        self._progress.on_run(run)
        return self._judge(run.get("status"))

    async def _follow_stream(self, client: NoxusAsyncClient) -> dict[str, Any] | None:
        """Follow one event-stream connection: the final event, or None if it closed before one."""
        events_of_run = client.a_iter_run_events(self.run_id, last_event_id=self.last_event_id)
        async with aclosing(cast("AsyncGenerator[RunEvent, None]", events_of_run)) as events:
            async for event in events:
                if event.event_id:
                    self.last_event_id = event.event_id
                self._progress.on_event(event)
                status = event.workflow_status or (
                    event.data.get("status") if event.type == "state" else None
                )
                final = self._judge(status)
                if final is not None:
                    return final
        return None

    # ----------------------------------------------------------------------------------------
    # Kill
    # ----------------------------------------------------------------------------------------

    async def on_kill(self) -> None:
        """Stop the run when a user kills the deferred task (Airflow 3.3+); best effort, bounded."""
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off: Noxus run %s is left running.", self.run_id)
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
