"""What a DAG file's imports of the provider cost: no module needed only to send a request or to run
in the triggerer.

Every task process and every DAG parse imports the DAG file, so ``aiohttp`` (the triggerer's), the
``requests`` transport (only when a task sends a request), OpenLineage (only after a run) and the
emulator must be imported where they are first used. Each check runs a fresh interpreter, which first
imports what a DAG file imports from Airflow anyway, then the provider's module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

#: What a DAG file imports from Airflow itself, before the provider.
AIRFLOW_DAG_IMPORTS = (
    "import airflow.sdk" if AIRFLOW_V_3_0_PLUS else "import airflow.decorators, airflow.models.dag"
)
#: Imported only when a request is sent, in the triggerer, or after a run: never by a DAG file.
LAZY_MODULES = (
    "aiohttp",
    "yarl",
    "multidict",
    "requests",
    "urllib3",
    "airflow_provider_noxus.hooks._transport.aiohttp_transport",
    "airflow_provider_noxus.hooks._transport.requests_transport",
    "airflow_provider_noxus.hooks._transport.deadline",
    "airflow_provider_noxus.openlineage",
    "airflow.providers.openlineage.extractors",
    "airflow_provider_noxus.emulator",
    "airflow_provider_noxus.triggers.noxus",
    "airflow_provider_noxus.triggers.status_watcher",
)
#: Airflow's trigger classes: imported by a DAG file only for an event trigger (AssetWatcher).
AIRFLOW_TRIGGERS = "airflow.triggers.base"
DAG_FILE_IMPORTS = [
    "airflow_provider_noxus",
    "airflow_provider_noxus.get_provider_info",
    "airflow_provider_noxus.operators.noxus",
    "airflow_provider_noxus.sensors.noxus",
    "airflow_provider_noxus.decorators.noxus",
    "airflow_provider_noxus.hooks.noxus",
]


def lazy_modules_imported_by(
    statement: str, *, then: str = "", lazy: tuple[str, ...] = (*LAZY_MODULES, AIRFLOW_TRIGGERS)
) -> list[str]:
    """The ``lazy`` modules a fresh interpreter imports for ``statement`` (and ``then``), past those
    Airflow's own DAG imports already hold.
    """
    code = (
        f"{AIRFLOW_DAG_IMPORTS}\n"
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        f"{then}\n"
        f"lazy = {lazy!r}\n"
        "new = set(sys.modules) - before\n"
        "print(json.dumps(sorted(m for m in new if any(m == p or m.startswith(p + '.') for p in lazy))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", DAG_FILE_IMPORTS)
def test_dag_file_imports_pull_in_no_transport_trigger_or_lineage_module(module: str) -> None:
    assert lazy_modules_imported_by(f"import {module}") == []


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="event triggers need Airflow 3")
def test_an_event_trigger_in_a_dag_file_pulls_in_no_transport_or_task_trigger() -> None:
    """An AssetWatcher's trigger is built in the DAG file: it needs Airflow's trigger classes, no more."""
    assert lazy_modules_imported_by("import airflow_provider_noxus.triggers.events", lazy=LAZY_MODULES) == []


def test_transports_are_still_importable_from_the_package_and_load_on_first_use() -> None:
    """The lazy names stay where they were: asking for one imports its transport, and only it."""
    pulled = lazy_modules_imported_by(
        "from airflow_provider_noxus.hooks._transport import SyncTransport",
        then="assert SyncTransport.__module__.endswith('requests_transport')",
    )
    assert "airflow_provider_noxus.hooks._transport.requests_transport" in pulled
    assert not any(m.split(".")[0] == "aiohttp" for m in pulled)

    pulled = lazy_modules_imported_by(
        "from airflow_provider_noxus.hooks import _transport",
        then="assert _transport.AsyncTransport.__module__.endswith('aiohttp_transport')",
    )
    assert "aiohttp" in pulled
    assert "airflow_provider_noxus.hooks._transport.requests_transport" not in pulled


def test_an_unknown_transport_name_is_an_attribute_error() -> None:
    from airflow_provider_noxus.hooks import _transport

    with pytest.raises(AttributeError, match="NoSuchTransport"):
        _transport.NoSuchTransport  # noqa: B018


def test_airflow_trigger_classes_are_still_importable_from_compat() -> None:
    from airflow.triggers import base

    from airflow_provider_noxus import _compat
    from airflow_provider_noxus._compat import BaseEventTrigger, BaseTrigger, TriggerEvent

    assert (BaseTrigger, TriggerEvent) == (base.BaseTrigger, base.TriggerEvent)
    assert BaseEventTrigger is (base.BaseEventTrigger if AIRFLOW_V_3_0_PLUS else None)
    with pytest.raises(AttributeError, match="NoSuchName"):
        _compat.NoSuchName  # noqa: B018
