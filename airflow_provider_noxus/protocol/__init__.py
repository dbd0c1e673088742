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
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

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
    NoxusRedirectError,
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
    :param timeout: seconds the whole request may take, from connecting to the last byte of the
        answer (for the event stream: the longest silence between two chunks); None means the
        connection's ``timeout``.
    :param creates_run: True for the non-idempotent run creation; see :func:`is_retryable`.
    :param stream: True for the event stream, read incrementally for as long as the run lasts: its
        ``timeout`` bounds each read, not the whole.
    :param run_id: run concerned, for error messages.
    :param workflow_id: workflow concerned, for error messages.
    :param max_bytes: the largest 2xx answer read (not for the event stream, whose frames are bounded
        by :data:`MAX_SSE_EVENT_CHARS`); past it the answer is dropped unread.
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


def build_url(base_url: str, request: ApiRequest) -> str:
    """Absolute URL of ``request`` below ``base_url`` (query parameters are left to the transport)."""
    return base_url.rstrip("/") + request.path


def without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` part, for every URL that is sent, shown or stored."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def origin_of_parts(scheme: str, host: str | None, port: int | str | None) -> str:
    """``scheme://host:port``, as every origin of this provider is written: lower case, the host
    without a trailing dot, an IPv6 host in brackets, the default port spelled out."""
    scheme = scheme.lower()
    host = (host or "").lower().rstrip(".").strip("[]")
    if ":" in host:
        host = f"[{host}]"
    port = port or {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}:{port}"


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default port spelled out, no userinfo, path or query), as
    ``urllib.parse`` reads it: for messages and settings. Where a request goes is decided by the
    parser of the library that sends it (see :func:`redirect_target`)."""
    parts = urlsplit(url)
    try:
        port: int | str | None = parts.port
    except ValueError:
        port = "invalid-port"  # equal to no real origin
    return origin_of_parts(parts.scheme, parts.hostname, port)


#: Same-origin redirects followed for one request, at most.
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: What a redirect's ``Location`` may not hold: a backslash (``urllib.parse`` keeps it in the
#: authority, urllib3 and browsers end the authority there), whitespace, control characters and
#: anything not ASCII. URL parsers disagree on them, so the host one reads is not the host another
#: connects to. Written as its complement (printable ASCII but the backslash): the same set as
#: ``[\\\x00-\x20\x7f-\U0010ffff]``, compiled in 0.1 ms instead of 13 ms at every import.
_AMBIGUOUS_LOCATION = re.compile(r"[^\x21-\x5b\x5d-\x7e]")

#: ``origin_of(url)``: the origin a URL's request would go to, as the library that sends it parses
#: the URL (the same string form as :func:`origin_of_parts`); raises ``ValueError`` for a URL it
#: would not send.
SentOrigin = Callable[[str], str]


def redirect_target(
    request: ApiRequest,
    base_url: str,
    current_url: str,
    status: int,
    location: str | None,
    hops: int,
    *,
    sent_origin: SentOrigin = origin,
) -> str:
    """Where to follow a redirect answer, or :class:`NoxusRedirectError`.

    The API key goes in every request, so a redirect is followed only within the base URL's origin
    (same scheme, host and port), at most :data:`MAX_REDIRECTS` times, and only when it keeps the
    method and body (307, 308, or any redirect of a GET). Anything else is refused before a
    request leaves for the new address, and so is a ``Location`` that parsers could read two ways
    (a backslash, whitespace, a control or non-ASCII character), one that the sending library
    cannot parse, or one with a user name or password.

    :param current_url: the URL that answered with the redirect.
    :param hops: redirects already followed for this request.
    :param sent_origin: the origin as the sending library reads a URL (the transport's parser: the
        one that decides where the key goes); default ``urllib.parse``'s.
    """
    common: dict[str, Any] = {
        "endpoint": request.endpoint,
        "status_code": status,
        "run_id": request.run_id,
        "workflow_id": request.workflow_id,
    }
    fix = "Set the connection's host to the address the API answers on."
    location = (location or "").strip(" \t")
    if not location:
        raise NoxusRedirectError("The Noxus API answered a redirect without a Location header.", **common)
    if _AMBIGUOUS_LOCATION.search(location):
        raise NoxusRedirectError(
            "The Noxus API redirected to a Location holding a backslash, whitespace, a control or a "
            "non-ASCII character, which HTTP libraries read as different hosts; it was not followed, "
            f"so that the API key never leaves the configured origin {origin(base_url)}. {fix}",
            **common,
        )
    try:
        target = urljoin(current_url, location)
        target_origin, base_origin = sent_origin(target), sent_origin(base_url)
        has_userinfo = "@" in urlsplit(target).netloc
    except ValueError:  # the server's Location is not a URL the sending library takes
        raise NoxusRedirectError(
            "The Noxus API redirected to a Location that is not a valid URL; it was not followed. "
            "Check the connection's host (base URL).",
            **common,
        ) from None
    if target_origin != base_origin:
        raise NoxusRedirectError(
            f"The Noxus API redirected to another origin, {target_origin}; the request "
            "was not sent there, so that the API key never leaves the configured origin "
            f"{base_origin}. Set the connection's host to the address the API answers on "
            "(e.g. https:// instead of http://, or the new host name).",
            **common,
        )
    if has_userinfo:
        raise NoxusRedirectError(
            "The Noxus API redirected to a Location with a user name or password, which this provider "
            f"never sends; it was not followed. {fix}",
            **common,
        )
    if request.method != "GET" and status not in (307, 308):
        raise NoxusRedirectError(
            f"The Noxus API redirected a {request.method} with HTTP {status}, which would drop its body; "
            "check the connection's host (base URL).",
            **common,
        )
    if hops >= MAX_REDIRECTS:
        raise NoxusRedirectError(
            f"The Noxus API redirected more than {MAX_REDIRECTS} times; check the connection's host "
            "(base URL).",
            **common,
        )
    return target


def default_headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}


def run_url(app_url: str, workflow_id: str, run_id: str) -> str:
    """Address of a run in the Noxus web app."""
    return f"{without_userinfo(app_url).rstrip('/')}/workflows/{_seg(workflow_id)}/runs/{_seg(run_id)}"


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
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), never negative.

    None for a missing or unreadable value (NaN included). The value is the server's: how long to
    actually wait is :func:`backoff_seconds`'s decision (floored and capped).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (OverflowError, OSError, ValueError):
        return None


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


def may_have_created_run(error: BaseException) -> bool:
    """Whether a run creation that failed with ``error`` may still have made a run.

    The one answer to this question: the retries (:func:`is_retryable`) and run identity (the
    look-up of a run whose create answer was lost) both ask it. No run was made only when the failure
    proves the request was not handled: the connection was refused or never sent (nothing reached
    the server), a 429 (a rate limiter refuses before handling), or a 4xx refusal of the request
    itself (400, 401, 403, 404, 409, 413, 422) or a refused redirect. Everything else may hide a run:
    a reset, a read timeout, a truncated or malformed answer, and every 5xx and 408, a 503 with
    ``Retry-After`` included (the API reference does not say a 503 is answered before the request
    is handled, and a proxy in front of the API may send one after forwarding the create).
    """
    if isinstance(error, NoxusTransportError):
        return error.reached_server
    if isinstance(error, NoxusRateLimitedError):
        return False
    return isinstance(error, (NoxusServerError, NoxusProtocolError))


def is_retryable(request: ApiRequest, error: BaseException) -> bool:
    """Whether sending ``request`` again may succeed where it just failed with ``error``.

    A run creation is not idempotent: it is sent again only after a transient failure that made no
    run (:func:`may_have_created_run`): a refused connection or a 429. Any other failure of a
    create is raised so that no duplicate run is made; the caller looks for the run it may have made.
    A TLS failure (untrusted certificate, wrong host name) fails the same way each time: never retried.
    """
    if isinstance(error, NoxusTLSError):
        return False
    if request.creates_run:
        transient = isinstance(error, (NoxusTransportError, NoxusRateLimitedError))
        return transient and not may_have_created_run(error)
    if isinstance(error, NoxusTransportError):
        return True
    return isinstance(error, NoxusApiError) and error.status_code in RETRYABLE_STATUSES


#: Shortest wait between two attempts, whatever the configuration (``max_backoff=0``) and whatever
#: the server says (``Retry-After: 0``): at most ten requests a second from one retry loop, which a
#: server that refuses requests can bear, while a test with tiny backoffs stays fast.
MIN_BACKOFF_S = 0.1


def backoff_seconds(
    policy: RetryPolicy, attempt: int, error: BaseException, rng: random.Random | None = None
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    The normal wait is exponential backoff with full jitter: within [c/2, c] for
    ``c = backoff_initial * 2**(attempt - 1)``. A server's ``Retry-After`` can lengthen it, never
    shorten it (``Retry-After: 0`` in a 429 storm must not make a hot loop). The result is capped
    by ``policy.backoff_max`` and never below :data:`MIN_BACKOFF_S`.
    """
    ceiling = min(policy.backoff_max, policy.backoff_initial * (2 ** min(attempt - 1, 64)))
    seconds = (rng or random).uniform(ceiling / 2, ceiling)
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, (int, float)) and retry_after > seconds:
        seconds = float(retry_after)
    return max(MIN_BACKOFF_S, min(seconds, policy.backoff_max))


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


#: Longest line, and longest event (its data lines together), of an event stream, in characters.
#: A run's frames carry node outputs, so the bound is generous; past it the stream is dropped with
#: :class:`NoxusProtocolError` rather than held in memory without end.
MAX_SSE_EVENT_CHARS = 16 * 1024 * 1024
_LINE_END = re.compile(r"\r\n|\r|\n")


def _event_id(value: Any) -> str | None:
    """A frame's ``redisId`` as text; an id that is not a string or a number is ignored."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


class SSEParser:
    """Incremental parser of a ``text/event-stream`` body into :class:`RunEvent` objects.

    Feed it raw body chunks as they arrive (:meth:`feed`), or decoded lines without their line
    ending (:meth:`feed_line`). Comment lines (``: keep-alive``) and frames whose data is not a
    JSON object are skipped. Parsing is linear in the input; a line or an event over
    :data:`MAX_SSE_EVENT_CHARS` characters raises :class:`NoxusProtocolError`.
    """

    def __init__(self, *, max_event_chars: int = MAX_SSE_EVENT_CHARS) -> None:
        self._max = max_event_chars
        self._data: list[str] = []
        self._data_chars = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        #: Start of the current line, when it spans chunks (joined once, when the line ends).
        self._partial: list[str] = []
        self._partial_chars = 0
        self._started = False
        #: The last chunk ended with "\r": a "\n" starting the next one belongs to the same line end.
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[RunEvent]:
        """Decode one body chunk and return the events it completes.

        A UTF-8 character, a line or a ``\r\n`` may be split across chunks; lines end with ``\n``,
        ``\r\n`` or ``\r`` as the SSE format allows, and a leading byte order mark is ignored.
        """
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        events = []
        start = 0
        for match in _LINE_END.finditer(text):
            line = text[start : match.start()]
            if self._partial:
                self._check_size(self._partial_chars + len(line), "line")
                line = "".join([*self._partial, line])
                self._partial, self._partial_chars = [], 0
            event = self.feed_line(line)
            if event is not None:
                events.append(event)
            start = match.end()
        if start < len(text):
            rest = text[start:]
            self._partial_chars += len(rest)
            self._check_size(self._partial_chars, "line")
            self._partial.append(rest)
        return events

    def _check_size(self, chars: int, what: str) -> None:
        if chars > self._max:
            raise NoxusProtocolError(
                f"The Noxus event stream sent more than {self._max} characters in one {what}; the stream "
                "was dropped (the run can still be read by polling)."
            )

    def feed_line(self, line: str) -> RunEvent | None:
        """Take one line without its line ending; the event it completes, if any."""
        line = line.rstrip("\r\n")
        self._check_size(len(line), "line")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            value = value[1:] if value.startswith(" ") else value
            self._data_chars += len(value) + 1
            self._check_size(self._data_chars, "event")
            self._data.append(value)
        return None

    def _dispatch(self) -> RunEvent | None:
        if not self._data:
            return None
        raw, self._data, self._data_chars = "\n".join(self._data), [], 0
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
            event_id=_event_id(payload.get("redisId")),
        )


__all__ = [
    "DEFAULT_BASE_URL",
    "FAILURE_STATUSES",
    "MAX_REDIRECTS",
    "MIN_BACKOFF_S",
    "TERMINAL_STATUSES",
    "ApiRequest",
    "NoxusRunStatus",
    "RetryPolicy",
    "RunEvent",
    "SSEParser",
    "may_have_created_run",
]
