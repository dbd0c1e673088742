"""OpenLineage facets of a Noxus run, for ``apache-airflow-providers-openlineage`` (extra ``openlineage``).

The operator's and the sensor's ``get_openlineage_facets_on_complete`` import this module when the
OpenLineage provider calls them, so nothing imports OpenLineage where it is not installed. What a task
reports:

- the Noxus run as the external job run: ``externalQuery`` (:class:`ExternalQueryRunFacet`, the run id
  with ``source`` the API's namespace ``noxus://<api host>``) and ``noxusRun`` (:class:`NoxusRunFacet`:
  run id, run URL, workflow id and version);
- file inputs given as a public URL or a ``spot://`` file as input datasets: a URL as namespace
  ``<scheme>://<host>[:port]`` and name its path (OpenLineage's naming for HTTP); a ``spot://<id>``
  file as ``noxus://<api host>`` and ``files/<id>``, the id read as the run input and the task's
  run identity read it (:func:`~airflow_provider_noxus.protocol.spot_file_id`). Local files and
  bytes have no name outside the worker and are not reported.

A dataset's name is the same whatever the request that fetched it: what can hold a credential or
change per request is dropped (user info, query, fragment, the ``;params`` of every path segment
such as ``;jsessionid=...``), and what only changes how the same address is written is made the
same (host case and trailing dot, a default port, ``.`` and ``..`` segments, percent-escapes of
letters, digits and ``-._~``, and the case of the others).

No facet holds the API key or any input value other than those file locations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import attrs
from airflow.providers.common.compat.openlineage.facet import (
    ExternalQueryRunFacet,
    InputDataset,
    RunFacet,
)
from airflow.providers.openlineage.extractors import OperatorLineage

from airflow_provider_noxus.files import NoxusFile
from airflow_provider_noxus.protocol import spot_file_id, spot_uri

#: The port a scheme implies, dropped from a namespace: ``https://h:443`` and ``https://h`` are one.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: A percent-escape in a URL path.
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
#: Characters that mean the same escaped or not (RFC 3986, 2.3).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@attrs.define
class NoxusRunFacet(RunFacet):
    """The Noxus run a task created or waited for.

    :param runId: the Noxus run id.
    :param runUrl: the run's page in the Noxus app.
    :param workflowId: the workflow it runs.
    :param workflowVersionId: the saved version it runs; None for the current one.
    """

    runId: str
    runUrl: str | None
    workflowId: str
    workflowVersionId: str | None = None


def api_namespace(base_url: str) -> str:
    """``noxus://<host>[:port]`` of the Noxus API a run lives on."""
    return f"noxus://{_authority(urlsplit(base_url))}"


def _authority(parts: SplitResult) -> str:
    """``host[:port]`` of a URL: no user info, the host in lower case without a trailing dot (an IPv6
    one in brackets), no default port.

    :raises ValueError: the port is not a number within 0..65535.
    """
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return host if port is None or DEFAULT_PORTS.get(parts.scheme) == port else f"{host}:{port}"


def _normal_escape(escape: re.Match[str]) -> str:
    char = chr(int(escape.group()[1:], 16))
    return char if char in _UNRESERVED else escape.group().upper()


def _dataset_path(path: str) -> str:
    """``path`` without the ``;params`` of its segments, its escapes normalized and its ``.`` and ``..``
    segments resolved (RFC 3986, 6.2.2); ``/`` when empty."""
    segments: list[str] = []
    for segment in path.split("/")[1:]:
        segment = _ESCAPE.sub(_normal_escape, segment.split(";", 1)[0])
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    return "/" + "/".join(segments)


def file_datasets(inputs: Any, namespace: str) -> list[InputDataset]:
    """Input datasets of the URL and ``spot://`` files among ``inputs`` (at any depth), in order, once each.

    :param inputs: the run's inputs: values that are :class:`NoxusFile` or ``{"uri": ...}`` objects count.
    :param namespace: the API's namespace (:func:`api_namespace`), for ``spot://`` files.
    """
    datasets: dict[tuple[str, str], InputDataset] = {}
    for uri in _file_uris(inputs):
        located = _locate(uri, namespace)
        if located is not None and located not in datasets:
            datasets[located] = InputDataset(namespace=located[0], name=located[1])
    return list(datasets.values())


def _file_uris(value: Any) -> Iterator[str]:
    if isinstance(value, NoxusFile):
        if value.kind == "url" and isinstance(value.source, str):
            yield value.source
        elif value.kind == "spot" and isinstance(value.source, str):
            yield spot_uri(value.source)
    elif isinstance(value, Mapping):
        if isinstance(value.get("uri"), str):
            yield value["uri"]
        else:
            for item in value.values():
                yield from _file_uris(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _file_uris(item)


def _locate(uri: str, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of a file URI; None for data URIs and anything else without a public name."""
    parts = urlsplit(uri.strip())
    if parts.scheme == "spot":
        file_id = spot_file_id(uri)
        return (namespace, f"files/{file_id}") if file_id else None
    if parts.scheme not in ("http", "https"):
        return None
    try:
        authority = _authority(parts)
    except ValueError:
        return None
    if not authority:
        return None
    return f"{parts.scheme}://{authority}", _dataset_path(parts.path)


def noxus_run_lineage(
    task: Any,
    *,
    run_id: str | None,
    inputs: Any = None,
    workflow_version_id: str | None = None,
) -> OperatorLineage:
    """What a Noxus operator or sensor reports once its task succeeded.

    Everything comes from the task object as ``execute`` left it (its hook has read the connection
    already): the OpenLineage provider calls this in a forked process, where a round trip to Airflow
    (an XCom pull, a connection lookup) can hang until the provider kills the process.

    :param task: the operator or sensor (``workflow_id``, ``hook`` and ``run_url`` are read).
    :param run_id: the run the task created or waited for; None (no run) reports nothing.
    :param inputs: the run's (rendered) inputs; the sensor has none.
    :param workflow_version_id: the workflow version the run was created with.
    """
    if not run_id:
        return OperatorLineage()
    namespace = api_namespace(task.hook.base_url)
    return OperatorLineage(
        inputs=file_datasets(inputs, namespace),
        run_facets={
            "externalQuery": ExternalQueryRunFacet(externalQueryId=str(run_id), source=namespace),
            "noxusRun": NoxusRunFacet(
                runId=str(run_id),
                runUrl=task.run_url(str(run_id)),
                workflowId=str(task.workflow_id),
                workflowVersionId=workflow_version_id,
            ),
        },
    )
