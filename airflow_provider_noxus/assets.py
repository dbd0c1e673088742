"""Noxus workflows as Airflow assets: ``noxus://<api host>/workflows/<workflow_id>``.

One asset per workflow of one Noxus installation. A DAG is scheduled on it through
:class:`~airflow_provider_noxus.triggers.events.NoxusRunEventTrigger` (an ``AssetWatcher``), and a
:class:`~airflow_provider_noxus.operators.noxus.NoxusRunOperator` that lists it in ``outlets`` attaches
the run it delivered to the asset event. Registered with Airflow under ``asset-uris`` (scheme ``noxus``):

- :func:`sanitize_uri` normalizes a URI (host lower-cased, no credentials, query or fragment, the path
  ``/workflows/<id>`` and nothing else), so two spellings of one workflow are one asset;
- :func:`convert_asset_to_openlineage` names the OpenLineage dataset of the workflow: namespace
  ``noxus://<api host>`` (the namespace :mod:`~airflow_provider_noxus.openlineage` gives the API) and name
  ``workflows/<workflow_id>``.

Nothing here imports Airflow at module level: Airflow imports the handlers while it parses DAGs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

SCHEME = "noxus"
_WORKFLOW_PATH = re.compile(r"^/workflows/([A-Za-z0-9][A-Za-z0-9._~-]*)/?$")


def api_host(base_url: str) -> str:
    """``host[:port]`` of a Noxus API base URL, without user info, lower-cased."""
    netloc = urlsplit(base_url).netloc.rsplit("@", 1)[-1]
    return netloc.lower()


def workflow_dataset_name(workflow_id: str) -> str:
    """The OpenLineage dataset name (and asset URI path, without its slash) of a workflow."""
    return f"workflows/{workflow_id}"


def workflow_asset_uri(base_url: str, workflow_id: str) -> str:
    """``noxus://<api host>/workflows/<workflow_id>`` for the workflow on the API at ``base_url``."""
    return f"{SCHEME}://{api_host(base_url)}/{workflow_dataset_name(workflow_id)}"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler for ``noxus://``: the normalized URI, or ValueError saying what to write."""
    expected = "write noxus://<api host>/workflows/<workflow_id>"
    if not uri.hostname:
        raise ValueError(f"A noxus:// asset URI needs the Noxus API host: {expected}.")
    if uri.username is not None or uri.password is not None:
        raise ValueError(f"A noxus:// asset URI must not hold credentials: {expected}.")
    if uri.query or uri.fragment:
        raise ValueError(f"A noxus:// asset URI has no query or fragment: {expected}.")
    match = _WORKFLOW_PATH.match(uri.path)
    if match is None:
        raise ValueError(f"A noxus:// asset URI names one workflow, not {uri.path!r}: {expected}.")
    netloc = uri.hostname.lower() if uri.port is None else f"{uri.hostname.lower()}:{uri.port}"
    return SplitResult(SCHEME, netloc, f"/{workflow_dataset_name(match.group(1))}", "", "")


def convert_asset_to_openlineage(asset: Any, lineage_context: Any) -> Any:
    """The OpenLineage dataset of a ``noxus://`` asset: namespace ``noxus://<api host>``, name
    ``workflows/<workflow_id>``."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parts = sanitize_uri(urlsplit(asset.uri))
    return Dataset(namespace=f"{SCHEME}://{parts.netloc}", name=parts.path.lstrip("/"))


def run_event_extra(
    *, run_id: str, workflow_id: str, status: str, run_url: str, finished_at: str | None = None
) -> dict[str, Any]:
    """What an asset event says of the Noxus run behind it (the event trigger's payload, the operator's
    outlet extra): ids, status, end time and link; never the run's output (read it with the hook)."""
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "status": status,
        "finished_at": finished_at,
        "run_url": run_url,
    }


def tell_outlets_of_run(
    task: Any, context: Mapping[str, Any], run_id: str, status: str = "completed"
) -> None:
    """Attach the run a Noxus task delivered (:func:`run_event_extra`) to the asset events of the task's
    asset ``outlets``. Aliases are left alone: they name no asset until a task adds one.

    :param task: the operator (``outlets``, ``workflow_id`` and ``run_url`` are read).
    :param context: the task's context (its ``outlet_events``).
    :param run_id: the run delivered.
    :param status: its status.
    """
    from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import Asset
    else:  # Airflow 2.11: datasets
        from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]

    outlet_events = context.get("outlet_events")
    assets = [outlet for outlet in getattr(task, "outlets", None) or () if isinstance(outlet, Asset)]
    if outlet_events is None or not assets:
        return
    extra = run_event_extra(
        run_id=run_id, workflow_id=task.workflow_id, status=status, run_url=task.run_url(run_id)
    )
    for asset in assets:
        outlet_events[asset].extra.update(extra)


__all__ = [
    "SCHEME",
    "api_host",
    "convert_asset_to_openlineage",
    "run_event_extra",
    "sanitize_uri",
    "tell_outlets_of_run",
    "workflow_asset_uri",
    "workflow_dataset_name",
]
