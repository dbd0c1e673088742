"""Requests to the Noxus API as data: paths, query parameters, bodies and their checks, headers.

Ids that go in a path are checked (:func:`check_id`) and quoted here, run inputs are checked against
what JSON can carry (:func:`check_json_inputs`), and each endpoint has its builder of
:class:`ApiRequest`. Where a request is sent and where a redirect may take it is in
:mod:`~airflow_provider_noxus.protocol.urls`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from airflow_provider_noxus import __version__
from airflow_provider_noxus.exceptions import NoxusConfigurationError

USER_AGENT = f"airflow-provider-noxus/{__version__}"

#: Seconds the server holds a sync create before answering 504.
SYNC_ENDPOINT_HOLD_S = 120.0
DEFAULT_TIMEOUT_S = 30.0
#: Timeout of the sync create: above the server's hold so its 504 reaches us.
SYNC_ENDPOINT_TIMEOUT_S = SYNC_ENDPOINT_HOLD_S + 15.0
#: Size cap of uploads and inline (data URI) files.
MAX_FILE_BYTES = 25 * 1024 * 1024
#: Largest answer read, unless its request says less (a run with its output, a file...).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Largest page of a run list read: 100 runs of ~20 KB each (runs carry their inputs). The
#: triggerer parses it in its event loop, where a 10 MB page stalls every trigger ~0.6 s; past the
#: cap, the shared status watcher reads its runs one by one.
MAX_LIST_ANSWER_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request to the Noxus API, independent of the library that sends it.

    :param method: HTTP method.
    :param path: path below the base URL, starting with ``/v1/``.
    :param params: query parameters.
    :param json_body: JSON body, if any.
    :param timeout: seconds the whole request may take, from connecting to the last byte of the
        answer (for the event stream: the longest silence between two chunks); None means the
        connection's ``timeout``.
    :param creates_run: True for the non-idempotent run creation; see
        :func:`~airflow_provider_noxus.protocol.is_retryable`.
    :param stream: True for the event stream, read incrementally for as long as the run lasts: its
        ``timeout`` bounds each read, not the whole.
    :param run_id: run concerned, for error messages.
    :param workflow_id: workflow concerned, for error messages.
    :param max_bytes: the largest 2xx answer read (not for the event stream, whose frames are bounded
        by :data:`~airflow_provider_noxus.protocol.MAX_SSE_EVENT_CHARS`); past it the answer is
        dropped unread.
    """

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json_body: Any = None
    timeout: float | None = None
    creates_run: bool = False
    stream: bool = False
    run_id: str | None = None
    workflow_id: str | None = None
    max_bytes: int = MAX_ANSWER_BYTES

    @property
    def endpoint(self) -> str:
        """``METHOD /path``, as shown in messages and debug logs."""
        return f"{self.method} {self.path}"


def check_id(value: Any) -> str:
    """``value`` as an id that may go in a path (ids come from users, templates and server answers).

    An empty id is refused, and so are ``.`` and ``..``: HTTP libraries resolve them as path steps
    (``/v1/runs/../stop`` is sent as ``/v1/stop``), so the request would reach another endpoint.
    """
    text = "" if value is None else str(value)
    if not text.strip() or text in (".", ".."):
        raise NoxusConfigurationError(
            f"{value!r} is not a Noxus id (it is empty, '.' or '..', which would change the request's "
            "path): pass the workflow, run or file id."
        )
    return text


def _seg(value: str) -> str:
    """Quote one path segment, refusing what is not an id (:func:`check_id`)."""
    return quote(check_id(value), safe="")


def _page(page: int, size: int) -> dict[str, int]:
    """Query of a paged list; the API takes ``page`` >= 1 and a size in 1..100.

    The size is sent under both names the API has used (``size`` in the docs, ``page_size`` in the
    official client); read the size the server used from the envelope's ``size``.
    """
    if not (
        isinstance(page, int)
        and not isinstance(page, bool)
        and page >= 1
        and isinstance(size, int)
        and not isinstance(size, bool)
        and 1 <= size <= 100
    ):
        raise NoxusConfigurationError(
            f"page must be >= 1 and size within 1..100, not page={page!r}, size={size!r}."
        )
    return {"page": page, "size": size, "page_size": size}


def _input_path(parent: str, key: Any) -> str:
    """``inputs.doc``, or ``inputs['a b']`` for a key that is not a plain name."""
    if isinstance(key, str) and key.isidentifier():
        return f"{parent}.{key}"
    return f"{parent}[{key!r}]"


def check_json_inputs(inputs: Mapping[str, Any], *, opaque: tuple[type, ...] = ()) -> None:
    """Refuse run inputs that JSON cannot carry, naming where they are (``inputs.doc.pages[2]``).

    NaN and infinite numbers (``json`` would write ``NaN``, which is not JSON) and values that are
    not JSON types (sets, dates, objects...) are refused; mappings with string (or number, bool,
    None) keys, lists and tuples are walked.

    :param opaque: types let through unchecked, replaced before the run is created (``NoxusFile``,
        for a check at task start, before file inputs are resolved).
    :raises NoxusConfigurationError: at the first value refused.
    """
    pending: list[tuple[str, Any]] = [("inputs", inputs)]
    while pending:
        where, value = pending.pop()
        if value is None or isinstance(value, (str, bool, int, *opaque)):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise NoxusConfigurationError(
                    f"Run input {where} is {value!r}, which JSON cannot carry: pass a finite number, a "
                    "string or None."
                )
            continue
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not (key is None or isinstance(key, (str, int, float))):
                    raise NoxusConfigurationError(
                        f"Run input {where} has the key {key!r} ({type(key).__name__}): JSON object keys "
                        "are strings; use string keys."
                    )
                pending.append((_input_path(where, key), item))
            continue
        if isinstance(value, (list, tuple)):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
            continue
        raise NoxusConfigurationError(
            f"Run input {where} is a {type(value).__name__}, which JSON cannot carry: pass a string, a "
            "number, a bool, None, a list or a mapping (convert it first, e.g. a date to its ISO text)."
        )


def _node_ids(node_ids: Any) -> list[str]:
    """``node_ids`` as a list of non-empty strings; a single string is refused, not split."""
    if isinstance(node_ids, (str, bytes)) or not isinstance(node_ids, Sequence):
        raise NoxusConfigurationError(
            f"node_ids must be a list of node ids, not {type(node_ids).__name__} {node_ids!r}: "
            "write node_ids=['node-1'] for one node."
        )
    for node_id in node_ids:
        if not isinstance(node_id, str) or not node_id.strip():
            raise NoxusConfigurationError(
                f"node_ids must hold non-empty node id strings, not {node_id!r} (in {list(node_ids)!r})."
            )
    return list(node_ids)


def create_run_body(
    inputs: Mapping[str, Any],
    *,
    workflow_version_id: str | None = None,
    node_ids: list[str] | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """Body of a run creation (async and sync endpoints alike).

    :raises NoxusConfigurationError: inputs that JSON cannot carry (see :func:`check_json_inputs`),
        ``node_ids`` that is not a list of node ids.
    """
    if not isinstance(inputs, Mapping):
        raise NoxusConfigurationError(
            f"Run inputs must be a mapping of input label (or node id) to value, not {type(inputs).__name__}."
        )
    check_json_inputs(inputs)
    body: dict[str, Any] = {"input": dict(inputs)}
    if workflow_version_id:
        body["workflow_version_id"] = workflow_version_id
    if node_ids is not None and (ids := _node_ids(node_ids)):
        body["node_ids"] = ids
    if callback_url:
        body["callback_url"] = callback_url
    return body


def create_run_request(workflow_id: str, body: Mapping[str, Any]) -> ApiRequest:
    return ApiRequest(
        "POST", f"/v1/workflows/{_seg(workflow_id)}/runs", json_body=dict(body),
        creates_run=True, workflow_id=workflow_id,
    )


def create_run_sync_request(
    workflow_id: str,
    body: Mapping[str, Any],
    *,
    use_output_ids: bool = False,
    timeout: float = SYNC_ENDPOINT_TIMEOUT_S,
) -> ApiRequest:
    params = {"use_output_ids": "true"} if use_output_ids else {}
    return ApiRequest(
        "POST", f"/v1/workflows/{_seg(workflow_id)}/runs/sync", params=params, json_body=dict(body),
        timeout=timeout, creates_run=True, workflow_id=workflow_id,
    )


def get_run_request(workflow_id: str, run_id: str, *, timeout: float | None = None) -> ApiRequest:
    """The run with its ``output`` (the only read that includes it).

    :param timeout: the request's total deadline; default the connection's ``timeout``.
    """
    return ApiRequest(
        "GET", f"/v1/workflows/{_seg(workflow_id)}/runs/{_seg(run_id)}",
        timeout=timeout, run_id=run_id, workflow_id=workflow_id,
    )


def get_run_status_request(run_id: str, *, timeout: float | None = None) -> ApiRequest:
    """The run without ``output``; needs no workflow id.

    :param timeout: the request's total deadline; default the connection's ``timeout``.
    """
    return ApiRequest("GET", f"/v1/runs/{_seg(run_id)}", timeout=timeout, run_id=run_id)


def list_runs_request(workflow_id: str, *, page: int = 1, size: int = 50) -> ApiRequest:
    return ApiRequest(
        "GET", f"/v1/workflows/{_seg(workflow_id)}/runs", params=_page(page, size),
        workflow_id=workflow_id, max_bytes=MAX_LIST_ANSWER_BYTES,
    )


def stop_run_request(run_id: str, *, workflow_id: str | None = None) -> ApiRequest:
    return ApiRequest("POST", f"/v1/runs/{_seg(run_id)}/stop", run_id=run_id, workflow_id=workflow_id)


def run_events_request(
    run_id: str, *, last_event_id: str | None = None, timeout: float | None = None
) -> ApiRequest:
    """The run's event stream; with ``last_event_id``, only the frames after it."""
    params = {"etag": last_event_id} if last_event_id else {}
    return ApiRequest(
        "GET", f"/v1/runs/{_seg(run_id)}/events", params=params, timeout=timeout, stream=True, run_id=run_id
    )


def upload_file_request() -> ApiRequest:
    """``POST /v1/file``; the transport adds the multipart part named ``file``."""
    return ApiRequest("POST", "/v1/file", timeout=300.0)


#: Scheme of the URI of a file stored in Noxus (``POST /v1/file`` answers it; run inputs take it).
SPOT_SCHEME = "spot://"


def spot_file_id(uri_or_id: str) -> str:
    """The file id of ``spot://<id>`` or of a bare id: the one reading of a stored file's reference.

    Surrounding spaces and slashes are dropped and the scheme is matched in any case, so
    ``" SPOT://f1/ "`` and ``"f1"`` name the same file; empty when no id is left.
    """
    text = str(uri_or_id).strip()
    if text[: len(SPOT_SCHEME)].lower() == SPOT_SCHEME:
        text = text[len(SPOT_SCHEME) :]
    return text.strip().strip("/")


def spot_uri(uri_or_id: str) -> str:
    """``spot://<id>`` of a stored file given as a URI or a bare id (see :func:`spot_file_id`)."""
    return SPOT_SCHEME + spot_file_id(uri_or_id)


def download_file_request(file_id: str) -> ApiRequest:
    """The bytes of a stored file; takes ``spot://<id>`` or ``<id>``."""
    return ApiRequest(
        "GET", f"/v1/file/{_seg(spot_file_id(file_id))}", timeout=300.0, max_bytes=MAX_FILE_BYTES
    )


def me_request() -> ApiRequest:
    """The calling key's record: a cheap authenticated GET. Its body holds the key: never log it."""
    return ApiRequest("GET", "/v1/admin/me")


def list_workflows_request(*, page: int = 1, size: int = 50) -> ApiRequest:
    return ApiRequest("GET", "/v1/workflows", params=_page(page, size))


def get_workflow_request(workflow_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/v1/workflows/{_seg(workflow_id)}", workflow_id=workflow_id)


def default_headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}
