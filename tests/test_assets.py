"""noxus:// assets (assets.py): the URI handler Airflow applies, the OpenLineage dataset, and the run a
Noxus task attaches to the asset events of its outlets (a real run on the emulator)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from support.noxus_tasks import make_context, make_operator, run_task, use_fast_connection

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_noxus.assets import (
    convert_asset_to_openlineage,
    sanitize_uri,
    workflow_asset_uri,
    workflow_dataset_name,
)

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import Asset, AssetAlias
    from airflow.sdk.execution_time.context import OutletEventAccessors
else:  # Airflow 2.11
    from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    from airflow.datasets import DatasetAlias as AssetAlias  # type: ignore[no-redef]
    from airflow.utils.context import OutletEventAccessors  # type: ignore[no-redef,attr-defined]


def normalized(uri: str) -> str:
    return urlunsplit(sanitize_uri(urlsplit(uri)))


def test_one_workflow_has_one_uri_however_it_is_spelled() -> None:
    assert (
        workflow_asset_uri("https://user:key@Backend.Noxus.AI/", "wf-1")
        == "noxus://backend.noxus.ai/workflows/wf-1"
    )
    assert normalized("noxus://Backend.Noxus.ai/workflows/wf-1/") == "noxus://backend.noxus.ai/workflows/wf-1"
    assert normalized("noxus://127.0.0.1:8080/workflows/wf-1") == "noxus://127.0.0.1:8080/workflows/wf-1"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("noxus:///workflows/wf", "needs the Noxus API host"),
        ("noxus://me:secret@host/workflows/wf", "must not hold credentials"),
        ("noxus://host/workflows/wf?x=1", "no query or fragment"),
        ("noxus://host/runs/r1", "names one workflow"),
        ("noxus://host/workflows/a/b", "names one workflow"),
    ],
)
def test_a_uri_that_names_no_workflow_is_refused_saying_what_to_write(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        sanitize_uri(urlsplit(uri))
    assert "noxus://<api host>/workflows/<workflow_id>" in str(raised.value)
    assert "secret" not in str(raised.value)


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="asset-uris are read by Airflow 3")
def test_airflow_normalizes_noxus_assets_with_the_provider_handler() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManagerTaskRuntime()
    assert manager.asset_uri_handlers["noxus"] is sanitize_uri
    assert manager.asset_to_openlineage_converters["noxus"] is convert_asset_to_openlineage
    assert Asset(uri="noxus://HOST.example/workflows/wf-1").uri == "noxus://host.example/workflows/wf-1"


def test_the_openlineage_dataset_is_the_workflow_on_the_api_namespace() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from airflow_provider_noxus.openlineage import api_namespace

    dataset = convert_asset_to_openlineage(Asset(uri="noxus://host.example:8443/workflows/wf-1"), None)
    assert (dataset.namespace, dataset.name) == (api_namespace("https://host.example:8443"), "workflows/wf-1")
    assert dataset.name == workflow_dataset_name("wf-1")


def test_a_delivered_run_is_attached_to_the_asset_events_of_the_outlets(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_connection(monkeypatch, noxus_emulator)
    workflow_id = noxus_emulator.control.workflow_id("echo")
    asset = Asset(uri=workflow_asset_uri(noxus_emulator.url, workflow_id))
    alias = AssetAlias(name="noxus_outputs")
    task = make_operator(noxus_emulator, "echo", {"text": "hi"}, outlets=[asset, alias], deferrable=False)
    context = make_context()
    context["outlet_events"] = events = OutletEventAccessors()
    output = run_task(task, context)
    assert output == {"text": "hi"}
    extra = events[asset].extra
    assert extra["workflow_id"] == workflow_id
    assert extra["status"] == "completed"
    assert extra["run_url"].endswith(extra["run_id"])
    assert noxus_emulator.control.run(extra["run_id"])["status"] == "completed"
    assert events[alias].extra == {}, "an alias names no asset: left alone"


def test_a_failed_run_attaches_nothing(noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_connection(monkeypatch, noxus_emulator)
    asset = Asset(uri=workflow_asset_uri(noxus_emulator.url, noxus_emulator.control.workflow_id("fail")))
    task = make_operator(noxus_emulator, "fail", {}, outlets=[asset], deferrable=False)
    context = make_context()
    context["outlet_events"] = events = OutletEventAccessors()
    with pytest.raises(Exception, match="failed"):
        run_task(task, context)
    assert events[asset].extra == {}
