"""The provider's registration: entry point, provider info, and what Airflow's CLI makes of them."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_noxus.get_provider_info import get_provider_info
from airflow_provider_noxus.hooks.noxus import NoxusHook

DISTRIBUTION = "airflow-provider-noxus"


def _import_path(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_entry_point_resolves_to_get_provider_info() -> None:
    (entry_point,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.dist and e.dist.name == DISTRIBUTION
    ]
    assert entry_point.load() is get_provider_info


def test_package_name_is_the_distribution_name() -> None:
    info = get_provider_info()
    assert info["package-name"] == distribution(DISTRIBUTION).metadata["Name"] == DISTRIBUTION
    assert info["versions"][0] == distribution(DISTRIBUTION).version


def test_every_module_and_class_named_in_the_provider_info_imports() -> None:
    info = get_provider_info()
    modules = [
        m
        for kind in ("hooks", "operators", "sensors", "triggers")
        for e in info[kind]
        for m in e["python-modules"]
    ]
    assert modules
    for module in modules:
        importlib.import_module(module)
    classes = [e["hook-class-name"] for e in info["connection-types"]] + info["extra-links"]
    for path in classes:
        assert isinstance(_import_path(path), type), path
    decorators = {e["name"]: _import_path(e["class-name"]) for e in info["task-decorators"]}
    assert list(decorators) == ["noxus"] and callable(decorators["noxus"])


def test_connection_type_matches_the_hook() -> None:
    (connection_type,) = get_provider_info()["connection-types"]
    assert _import_path(connection_type["hook-class-name"]) is NoxusHook
    assert connection_type["connection-type"] == NoxusHook.conn_type == "noxus"
    assert connection_type["hook-name"] == NoxusHook.hook_name
    assert NoxusHook.default_conn_name == "noxus_default"


def test_airflow_2_field_behaviour_mirrors_the_provider_info() -> None:
    behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    assert NoxusHook.get_ui_field_behaviour() == {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_airflow_2_form_widgets_mirror_the_conn_fields() -> None:
    pytest.importorskip("flask_appbuilder", reason="the Airflow 2 form (FAB) is not installed with Airflow 3")
    conn_fields = get_provider_info()["connection-types"][0]["conn-fields"]
    widgets = NoxusHook.get_connection_form_widgets()
    assert set(widgets) == set(conn_fields)
    for name, widget in widgets.items():
        assert str(widget.args[0]) == conn_fields[name]["label"]
        assert widget.field_class.__name__ in {"StringField", "IntegerField", "BooleanField"}, name


# ---- Airflow's CLI, in a subprocess with its own home ------------------------------------------


def _airflow(args: list[str], home: Path, connection: dict[str, Any] | None = None) -> str:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "PYTEST_"))
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
    )
    if connection is not None:
        env["AIRFLOW_CONN_NOXUS_DEFAULT"] = json.dumps(connection)
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout + result.stderr


def test_airflow_providers_hooks_lists_the_noxus_hook(tmp_path: Path) -> None:
    output = _airflow(["providers", "hooks"], tmp_path)
    (line,) = [line for line in output.splitlines() if line.startswith("noxus ")]
    assert "airflow_provider_noxus.hooks.noxus.NoxusHook" in line
    assert DISTRIBUTION in line


def test_airflow_providers_get_shows_the_task_decorator(tmp_path: Path) -> None:
    output = _airflow(["providers", "get", DISTRIBUTION, "--full", "--output", "json"], tmp_path)
    (info,), _ = json.JSONDecoder().raw_decode(output[output.index("[") :])  # warnings may follow
    assert info["task-decorators"] == [
        {"name": "noxus", "class-name": "airflow_provider_noxus.decorators.noxus.noxus_task"}
    ]


def test_airflow_connections_test_succeeds_against_the_emulator(noxus_emulator: Any, tmp_path: Path) -> None:
    connection = {"conn_type": "noxus", "host": noxus_emulator.url, "password": noxus_emulator.api_key}
    output = _airflow(["connections", "test", "noxus_default"], tmp_path, connection)
    assert "Connection success!" in output, output
    assert noxus_emulator.control.counters()["requests"]["me"] == {"200": 1}


def test_airflow_connections_test_says_the_key_is_wrong(noxus_emulator: Any, tmp_path: Path) -> None:
    connection = {"conn_type": "noxus", "host": noxus_emulator.url, "password": "nxk-not-a-valid-key-42"}
    output = _airflow(["connections", "test", "noxus_default"], tmp_path, connection)
    assert "Connection failed!" in output, output
    assert "refused the API key (HTTP 401)" in output
    assert "nxk-not-a-valid-key-42" not in output
