"""Helpers to run the Noxus operator, sensor and trigger in plain pytest, against the emulator.

Airflow's task runner is not used: ``run_task`` calls ``execute``, runs the deferred trigger itself
when the task defers, then calls the method the task named, or, when the trigger ended the task
(``end_from_trigger``), does what Airflow does with its event: keeps the XComs the trigger pushed
(:class:`TriggererChannel`) or the event carried and returns the return value, or raises
:class:`TaskFailedInTriggerer`. The task instance is a small stand-in
that records XCom pushes (the real one needs Airflow's supervisor); the real path is exercised by
``airflow dags test`` (tests/operators/test_noxus_dags.py) and the e2e suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS, BaseTrigger, TaskFailedEvent, TaskSuccessEvent

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk.exceptions import TaskDeferred
else:  # Airflow 2.11
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined]

#: Connection extras that keep the hook's own retries short, so fault tests run fast.
FAST_RETRY_EXTRAS = {"retry_attempts": 2, "max_backoff": 0.2, "timeout": 10}


def use_fast_connection(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, api_key: str | None = None, **overrides: Any
) -> None:
    """Point ``noxus_default`` at ``emulator`` (or any server with a ``url``) with short retries.

    :param api_key: the key to send; by default the emulator's.
    :param overrides: connection fields to change.
    """
    connection = {
        "conn_type": "noxus",
        "host": emulator.url,
        "password": api_key or emulator.api_key,
        "extra": FAST_RETRY_EXTRAS,
        **overrides,
    }
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))


class FakeTaskInstance:
    """What the operator reads from ``context["ti"]``: XCom pushes, start date, try number, and
    ``max_tries`` (which Airflow raises when it clears a task instance)."""

    def __init__(self, try_number: int = 1, start_date: datetime | None = None, max_tries: int = 0) -> None:
        self.xcom: dict[str, Any] = {}
        self.try_number = try_number
        self.max_tries = max_tries
        self.start_date = start_date or datetime.now(timezone.utc)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class DictStateStore:
    """Dict-backed stand-in for Airflow 3.3's ``task_state_store`` (``get``/``set``)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


def make_context(ti: FakeTaskInstance | None = None, store: DictStateStore | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": ti or FakeTaskInstance()}
    if store is not None:
        context["task_state_store"] = store
    return context


class TaskFailedInTriggerer(Exception):
    """The trigger ended the task as failed (its error is in the trigger's log)."""


class TriggererChannel:
    """Airflow 3's triggerer side of a trigger's XCom pushes (``XCom.aset`` goes through the triggerer's
    supervisor to the Execution API): records each push, by the task it is for, as that API stores it.
    The real channel runs in the e2e suite."""

    def __init__(self) -> None:
        self.pushed: dict[str, dict[str, Any]] = {}
        self._users = 0
        self._saved: Any = None

    async def asend(self, message: Any) -> None:
        assert type(message).__name__ == "SetXCom", f"only XCom pushes are expected, got {message!r}"
        self.pushed.setdefault(message.task_id, {})[message.key] = message.value

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Be the supervisor channel while any trigger of the test runs (they may run at once)."""
        from airflow.sdk.execution_time import task_runner

        if self._users == 0:
            self._saved = getattr(task_runner, "SUPERVISOR_COMMS", None)
            task_runner.SUPERVISOR_COMMS = self  # type: ignore[assignment]
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if self._users == 0:
                task_runner.SUPERVISOR_COMMS = self._saved


TRIGGERER_CHANNEL = TriggererChannel()


async def first_trigger_event(trigger: BaseTrigger) -> Any:
    """Run ``trigger`` until its first event, as a triggerer does (on Airflow 3 with a task instance and
    :data:`TRIGGERER_CHANNEL`), and return it (closing the generator)."""
    if not AIRFLOW_V_3_0_PLUS:
        return await _first_event_of(trigger)
    if trigger.task_instance is None:
        trigger.task_instance = SimpleNamespace(  # type: ignore[assignment]
            dag_id="tests", task_id=f"trigger-{id(trigger)}", run_id="run", map_index=-1
        )
    with TRIGGERER_CHANNEL.installed():
        return await _first_event_of(trigger)


async def _first_event_of(trigger: BaseTrigger) -> Any:
    events = trigger.run()
    try:
        return await events.__anext__()
    finally:
        await events.aclose()


async def task_end(trigger: BaseTrigger) -> tuple[Any, dict[str, Any]]:
    """Run ``trigger`` to its first event; the event and every XCom the task ends with (pushed through
    the triggerer, or carried by the event)."""
    event = await first_trigger_event(trigger)
    pushed = TRIGGERER_CHANNEL.pushed.pop(trigger.task_instance.task_id, {}) if AIRFLOW_V_3_0_PLUS else {}
    return event, {**pushed, **(getattr(event, "xcoms", None) or {})}


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """Run ``trigger`` until its first event and return the payload (closing the generator)."""
    event = await first_trigger_event(trigger)
    return event.payload  # type: ignore[no-any-return]


def run_task(task: Any, context: dict[str, Any]) -> Any:
    """``execute`` the task; when it defers, run the trigger to its event and resume the task, or end it
    as Airflow does when the trigger ended it."""
    try:
        return task.execute(context)
    except TaskDeferred as deferred:
        event, xcoms = asyncio.run(task_end(deferred.trigger))
        for key, value in xcoms.items():
            context["ti"].xcom_push(key=key, value=value)
        if isinstance(event, TaskSuccessEvent):
            return xcoms.get("return_value")
        if isinstance(event, TaskFailedEvent):
            raise TaskFailedInTriggerer(f"task {task.task_id} failed in the triggerer") from None
        return getattr(task, deferred.method_name)(context, **(deferred.kwargs or {}), event=event.payload)


def defer_only(task: Any, context: dict[str, Any]) -> TaskDeferred:
    """``execute`` the task and return the deferral it must raise."""
    with pytest.raises(TaskDeferred) as raised:
        task.execute(context)
    return raised.value


def make_operator(emu: Any, workflow: str, inputs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A NoxusRunOperator on one of the emulator's workflows, polling every 0.05 s; unless told, it
    resumes on the worker (``end_from_trigger=False``: tests/operators/test_end_from_trigger.py covers
    the tasks that end in the triggerer)."""
    from airflow_provider_noxus.operators.noxus import NoxusRunOperator

    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("end_from_trigger", False)
    return NoxusRunOperator(
        task_id=f"run_{workflow}", workflow_id=emu.control.workflow_id(workflow), inputs=inputs, **kwargs
    )
