"""The Noxus API as data: paths, request bodies, statuses, error mapping, retry rules, SSE frames.

This module does no I/O and imports no HTTP library. The sync transport (``requests``) and the
async transport (``aiohttp``) in :mod:`airflow_provider_noxus.hooks._transport` both call these
functions, so URL building, error mapping and retry decisions are written once. The wire names of
the event stream (the frame's ``redisId``, the ``?etag=`` query) appear only here: the rest of the
provider calls a frame's id its ``event_id`` and the id to resume after ``last_event_id``.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote

from airflow_provider_noxus import __version__
from airflow_provider_noxus.exceptions import (
    NoxusApiError,
    NoxusAuthError,
    NoxusBadRequestError,
    NoxusConfigurationError,
    NoxusConflictError,
    NoxusNotFoundError,
    NoxusPayloadTooLargeError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusServerError,
    NoxusSyncEndpointTimeout,
    NoxusTLSError,
    NoxusTransportError,
    NoxusValidationError,
    shorten,
)

DEFAULT_BASE_URL = "https://backend.noxus.ai"
DEFAULT_APP_URL = "https://app.noxus.ai"
USER_AGENT = f"airflow-provider-noxus/{__version__}"

#: Seconds the server holds a sync create before answering 504.
SYNC_ENDPOINT_HOLD_S = 120.0
DEFAULT_TIMEOUT_S = 30.0
#: Read timeout of the sync create: above the server's hold so its 504 reaches us.
SYNC_ENDPOINT_TIMEOUT_S = SYNC_ENDPOINT_HOLD_S + 15.0
#: Size cap of uploads and inline (data URI) files.
MAX_FILE_BYTES = 25 * 1024 * 1024


class NoxusRunStatus(str, Enum):
    """Statuses of a Noxus run (API reference, section 5)."""

    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_HUMAN_FEEDBACK = "awaiting_human_feedback"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @classmethod
    def parse(cls, value: Any) -> NoxusRunStatus | None:
        """The status named by ``value``, or None for a status this provider does not know."""
        try:
            return cls(value)
        except ValueError:
            return None

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({NoxusRunStatus.COMPLETED, NoxusRunStatus.FAILED, NoxusRunStatus.STOPPED})
FAILURE_STATUSES = frozenset({NoxusRunStatus.FAILED, NoxusRunStatus.STOPPED})


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request to the Noxus API, independent of the library that sends it.

    :param method: HTTP method.
    :param path: path below the base URL, starting with ``/v1/``.
    :param params: query parameters.
    :param json_body: JSON body, if any.
    :param timeout: read timeout in seconds; None means the connection's default.
    :param creates_run: True for the non-idempotent run creation; see :func:`is_retryable`.
    :param stream: True when the response is read incrementally (SSE, downloads).
    :param run_id: run concerned, for error messages.
    :param workflow_id: workflow concerned, for error messages.
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

    @property
    def endpoint(self) -> str:
        """``METHOD /path``, as shown in messages and debug logs."""
        return f"{self.method} {self.path}"


def _seg(value: str) -> str:
    """Quote one path segment (ids come from users and templates); an empty id is refused."""
    if value is None or not str(value).strip():
        raise NoxusConfigurationError(
            f"An id in a Noxus API path is empty ({value!r}): pass the workflow, run or file id."
        )
    return quote(str(value), safe="")


def _page(page: int, size: int) -> dict[str, int]:
    """Query of a paged list; the API takes ``page`` >= 1 and ``size`` in 1..100."""
    if not (isinstance(page, int) and page >= 1 and isinstance(size, int) and 1 <= size <= 100):
        raise NoxusConfigurationError(
            f"page must be >= 1 and size within 1..100, not page={page!r}, size={size!r}."
        )
    return {"page": page, "size": size}


def create_run_body(
    inputs: Mapping[str, Any],
    *,
    workflow_version_id: str | None = None,
    node_ids: list[str] | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """Body of a run creation (async and sync endpoints alike)."""
    if not isinstance(inputs, Mapping):
        raise NoxusConfigurationError(
            f"Run inputs must be a mapping of input label (or node id) to value, not {type(inputs).__name__}."
        )
    body: dict[str, Any] = {"input": dict(inputs)}
    if workflow_version_id:
        body["workflow_version_id"] = workflow_version_id
    if node_ids:
        body["node_ids"] = list(node_ids)
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


def get_run_request(workflow_id: str, run_id: str) -> ApiRequest:
    """The run with its ``output`` (the only read that includes it)."""
    return ApiRequest(
        "GET", f"/v1/workflows/{_seg(workflow_id)}/runs/{_seg(run_id)}",
        run_id=run_id, workflow_id=workflow_id,
    )


def get_run_status_request(run_id: str, *, timeout: float | None = None) -> ApiRequest:
    """The run without ``output``; needs no workflow id."""
    return ApiRequest("GET", f"/v1/runs/{_seg(run_id)}", timeout=timeout, run_id=run_id)


def list_runs_request(workflow_id: str, *, page: int = 1, size: int = 50) -> ApiRequest:
    return ApiRequest(
        "GET", f"/v1/workflows/{_seg(workflow_id)}/runs", params=_page(page, size),
        workflow_id=workflow_id,
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


def download_file_request(file_id: str) -> ApiRequest:
    file_id = file_id.removeprefix("spot://")
    return ApiRequest("GET", f"/v1/file/{_seg(file_id)}", stream=True, timeout=300.0)


def me_request() -> ApiRequest:
    """The calling key's record: a cheap authenticated GET. Its body holds the key: never log it."""
    return ApiRequest("GET", "/v1/admin/me")


def list_workflows_request(*, page: int = 1, size: int = 50) -> ApiRequest:
    return ApiRequest("GET", "/v1/workflows", params=_page(page, size))


def get_workflow_request(workflow_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/v1/workflows/{_seg(workflow_id)}", workflow_id=workflow_id)


def build_url(base_url: str, request: ApiRequest) -> str:
    """Absolute URL of ``request`` below ``base_url`` (query parameters are left to the transport)."""
    return base_url.rstrip("/") + request.path


def default_headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}


def run_url(app_url: str, workflow_id: str, run_id: str) -> str:
    """Address of a run in the Noxus web app."""
    return f"{app_url.rstrip('/')}/workflows/{_seg(workflow_id)}/runs/{_seg(run_id)}"


# --------------------------------------------------------------------------------------------
# Responses and errors
# --------------------------------------------------------------------------------------------

_ERROR_BY_STATUS: dict[int, type[NoxusApiError]] = {
    400: NoxusBadRequestError,
    401: NoxusAuthError,
    403: NoxusAuthError,
    404: NoxusNotFoundError,
    409: NoxusConflictError,
    413: NoxusPayloadTooLargeError,
    422: NoxusValidationError,
    429: NoxusRateLimitedError,
}

_HINT_BY_STATUS: dict[int, str] = {
    401: "The API key was refused: check the password field of the Noxus connection.",
    403: "The API key has no rights here: check the Noxus connection's key and workspace.",
    404: "Not found in the API key's workspace: check the workflow or run id and the connection.",
    422: "The server refused the request.",
    429: "The Noxus API is rate limiting this key.",
    413: "The file is over the server's size cap.",
}


def _format_detail(detail: Any) -> Any:
    """Make FastAPI's 422 list readable: ``body.input.Question: field required; ...``."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", []) if p is not None)
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return detail


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(
    request: ApiRequest, status_code: int, body: bytes | str | None, headers: Mapping[str, str]
) -> NoxusApiError:
    """The typed error for an error response; ``headers`` keys are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    detail: Any = None
    payload: Any = None
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        detail = shorten(text.strip()) if text.strip() else None
    if isinstance(payload, Mapping):
        detail = _format_detail(payload.get("detail"))
    elif payload is not None:
        detail = shorten(json.dumps(payload))
    common: dict[str, Any] = {
        "endpoint": request.endpoint,
        "status_code": status_code,
        "detail": detail,
        "request_id": lower.get("x-request-id"),
        "run_id": request.run_id,
        "workflow_id": request.workflow_id,
    }
    if status_code == 504 and request.path.endswith("/runs/sync"):
        run_id = payload.get("run_id") if isinstance(payload, Mapping) else None
        common["run_id"] = run_id or request.run_id
        return NoxusSyncEndpointTimeout(
            "The sync endpoint held the request past its limit; the run goes on and can be awaited.", **common
        )
    common["retry_after"] = parse_retry_after(lower.get("retry-after"))
    error_class = _ERROR_BY_STATUS.get(status_code)
    if error_class is None:
        error_class = NoxusServerError if status_code >= 500 or status_code == 408 else NoxusApiError
    hint = _HINT_BY_STATUS.get(status_code, f"The Noxus API answered HTTP {status_code}.")
    return error_class(hint, **common)


def parse_json(request: ApiRequest, body: bytes | str) -> Any:
    """Decode a 2xx JSON body, or raise :class:`NoxusProtocolError` naming the endpoint."""
    try:
        return json.loads(body)
    except ValueError:
        raise NoxusProtocolError(
            "The Noxus API answered with a body that is not JSON.",
            endpoint=request.endpoint, detail=shorten(body if isinstance(body, str) else repr(body[:200])),
            run_id=request.run_id, workflow_id=request.workflow_id,
        ) from None


# --------------------------------------------------------------------------------------------
# Retry rules: one policy for both transports
# --------------------------------------------------------------------------------------------

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try.

    :param max_attempts: attempts in all, the first included.
    :param backoff_initial: first backoff in seconds, doubled each time, with full jitter.
    :param backoff_max: cap of one backoff, and of an honoured ``Retry-After``.
    :param total_budget: seconds after the first attempt past which no new attempt starts.
    """

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    total_budget: float = 300.0


def is_retryable(request: ApiRequest, error: BaseException) -> bool:
    """Whether sending ``request`` again may succeed where it just failed with ``error``.

    A run creation is not idempotent: it is sent again only when the first try provably did not
    create a run: the connection was refused (nothing reached the server), or the server
    answered 429, or 503 with ``Retry-After`` (it refused the request before handling it).
    Any other failure of a create (a reset, a read timeout, a 500/502/504) may hide a run that
    was created, and is raised so that no duplicate run is made.
    A TLS failure (untrusted certificate, wrong host name) fails the same way each time: never retried.
    """
    if isinstance(error, NoxusTLSError):
        return False
    if request.creates_run:
        if isinstance(error, NoxusTransportError):
            return not error.reached_server
        if isinstance(error, NoxusRateLimitedError):
            return True
        return (
            isinstance(error, NoxusServerError) and error.status_code == 503 and error.retry_after is not None
        )
    if isinstance(error, NoxusTransportError):
        return True
    return isinstance(error, NoxusApiError) and error.status_code in RETRYABLE_STATUSES


def backoff_seconds(
    policy: RetryPolicy, attempt: int, error: BaseException, rng: random.Random | None = None
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    A server's ``Retry-After`` is honoured, capped at ``policy.backoff_max``; otherwise
    exponential backoff with full jitter, capped.
    """
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), policy.backoff_max)
    ceiling = min(policy.backoff_max, policy.backoff_initial * (2 ** (attempt - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


# --------------------------------------------------------------------------------------------
# Server-Sent Events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunEvent:
    """One SSE frame of a run.

    :param type: ``state`` or ``content`` (other values are passed through).
    :param data: the frame's ``data`` object.
    :param event_id: the frame's id (``redisId``): resume after it with ``last_event_id``.
    """

    type: str
    data: dict[str, Any]
    event_id: str | None

    @property
    def workflow_status(self) -> str | None:
        """The run's final status, set on the last frame only."""
        value = self.data.get("workflow_status")
        return str(value) if value else None


class SSEParser:
    """Incremental parser of a ``text/event-stream`` body into :class:`RunEvent` objects.

    Feed it raw body chunks as they arrive (:meth:`feed`), or decoded lines without their line
    ending (:meth:`feed_line`). Comment lines (``: keep-alive``) and frames whose data is not a
    JSON object are skipped.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[RunEvent]:
        """Decode one body chunk and return the events it completes.

        A UTF-8 character or a line may be split across chunks; lines end with ``\\n``, ``\\r\\n``
        or ``\\r`` as the SSE format allows.
        """
        text = self._pending + self._decoder.decode(chunk)
        # A trailing "\r" may be the first half of "\r\n": keep it until the next chunk.
        keep_cr = text.endswith("\r")
        lines = (text[:-1] if keep_cr else text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop() + ("\r" if keep_cr else "")
        events = []
        for line in lines:
            event = self.feed_line(line)
            if event is not None:
                events.append(event)
        return events

    def feed_line(self, line: str) -> RunEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def _dispatch(self) -> RunEvent | None:
        if not self._data:
            return None
        raw, self._data = "\n".join(self._data), []
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        data = payload.get("data")
        return RunEvent(
            type=str(payload.get("type", "")),
            data=data if isinstance(data, dict) else {},
            event_id=payload.get("redisId"),
        )


__all__ = [
    "DEFAULT_BASE_URL",
    "FAILURE_STATUSES",
    "TERMINAL_STATUSES",
    "ApiRequest",
    "NoxusRunStatus",
    "RetryPolicy",
    "RunEvent",
    "SSEParser",
]
