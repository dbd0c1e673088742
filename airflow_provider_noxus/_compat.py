"""Every difference between Airflow 2.11 and Airflow 3.x that this provider meets, in one place.

Other modules import Airflow's base classes from here, never from ``airflow.*`` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION_STR
from airflow.exceptions import AirflowException, AirflowNotFoundException
from packaging.version import Version

AIRFLOW_VERSION = Version(Version(AIRFLOW_VERSION_STR).base_version)
AIRFLOW_V_3_0_PLUS = Version("3.0.0") <= AIRFLOW_VERSION
#: ``task_state_store`` (durable per-task-instance state that survives retries) and trigger ``on_kill``.
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= AIRFLOW_VERSION

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator, PokeReturnValue
    from airflow.sdk.bases.decorator import (
        DecoratedOperator,
        TaskDecorator,
        determine_kwargs,
        task_decorator_factory,
    )
    from airflow.sdk.bases.xcom import BaseXCom as XCom
    from airflow.sdk.definitions.context import context_merge
    from airflow.sdk.exceptions import AirflowFailException
else:  # Airflow 2.11
    from airflow.decorators.base import (  # type: ignore[no-redef]
        DecoratedOperator,
        TaskDecorator,
        task_decorator_factory,
    )
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]
    from airflow.models.baseoperatorlink import BaseOperatorLink  # type: ignore[no-redef]
    from airflow.models.xcom import XCom  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue  # type: ignore[no-redef]
    from airflow.utils.context import context_merge  # type: ignore[no-redef,attr-defined]
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef]

if TYPE_CHECKING:  # type-checked against Airflow 3; on 2.11 the same names are duck-typed alike
    from airflow.sdk import Connection, Context
    from airflow.triggers.base import (
        BaseEventTrigger,
        BaseTrigger,
        StartTriggerArgs,
        TaskFailedEvent,
        TaskSuccessEvent,
        TriggerEvent,
    )

#: Airflow's trigger classes, imported on first use (see ``__getattr__``): a DAG file importing an
#: operator need not load them. ``BaseEventTrigger`` (event-driven scheduling, AssetWatcher) exists
#: from Airflow 3.0; on 2.11 it is None.
_TRIGGER_NAMES = frozenset(
    {
        "BaseTrigger",
        "TriggerEvent",
        "BaseEventTrigger",
        "StartTriggerArgs",
        "TaskFailedEvent",
        "TaskSuccessEvent",
    }
)


def __getattr__(name: str) -> Any:
    """Import Airflow's trigger classes when first asked for (PEP 562)."""
    if name not in _TRIGGER_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "BaseEventTrigger" and not AIRFLOW_V_3_0_PLUS:
        return None
    from airflow.triggers import base

    return getattr(base, name)


async def aget_connection(conn_id: str) -> Connection:
    """Read a connection from async code without blocking the event loop.

    Airflow 3 forbids a sync connection read inside the triggerer; its ``BaseHook.aget_connection``
    goes through the supervisor asynchronously. Airflow 2.11 has no async read: the sync one runs
    in a worker thread.
    """
    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)


def mask_secret(value: Any) -> None:
    """Register ``value`` with Airflow's secrets masker so it never shows in logs."""
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:
        from airflow.utils.log.secrets_masker import mask_secret as _mask  # type: ignore[no-redef]
    _mask(value)


async def atask_instance_state(task_instance: Any) -> str | None:
    """The state Airflow gives a trigger's task instance now, asked through the triggerer's supervisor
    (Airflow 3); None when it cannot be asked (Airflow 2, a trigger run outside a triggerer)."""
    if not AIRFLOW_V_3_0_PLUS or task_instance is None:
        return None
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates

        comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
        if comms is None:
            return None
        task_id, run_id, map_index = task_instance.task_id, task_instance.run_id, task_instance.map_index
        response = await comms.asend(
            GetTaskStates(
                dag_id=task_instance.dag_id,
                task_ids=[task_id],
                run_ids=[run_id],
                map_index=map_index if map_index >= 0 else None,
            )
        )
    except Exception:  # an older or different supervisor: the caller acts as if it could not ask
        return None
    states = getattr(response, "task_states", None) or {}
    state = states.get(run_id, {}).get(task_id if map_index < 0 else f"{task_id}_{map_index}")
    return str(state) if state is not None else None


async def amask_secret(value: Any) -> None:
    """:func:`mask_secret` for async code: on Airflow 3 the supervisor is told without blocking the loop."""
    if not value:
        return
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:  # Airflow 2.11 and 3.0: registering is local, nothing to wait for
        mask_secret(value)
        return
    await _amask(value)


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "BaseEventTrigger",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "Connection",
    "Context",
    "DecoratedOperator",
    "PokeReturnValue",
    "StartTriggerArgs",
    "TaskDecorator",
    "TaskFailedEvent",
    "TaskSuccessEvent",
    "TriggerEvent",
    "XCom",
    "aget_connection",
    "amask_secret",
    "atask_instance_state",
    "context_merge",
    "determine_kwargs",
    "mask_secret",
    "task_decorator_factory",
]
