"""The Noxus API as data: paths, request bodies, statuses, error mapping, retry rules, SSE frames.

This package does no I/O and imports no HTTP library. The sync transport (``requests``) and the
async transport (``aiohttp``) in :mod:`airflow_provider_noxus.hooks._transport` both call these
functions, so URL building, error mapping and retry decisions are written once. The wire names of
the event stream (the frame's ``redisId``, the ``?etag=`` query) appear only here: the rest of the
provider calls a frame's id its ``event_id`` and the id to resume after ``last_event_id``.

One module per concern, each name imported from here:

- :mod:`~airflow_provider_noxus.protocol.statuses`: a run's statuses, and which are final;
- :mod:`~airflow_provider_noxus.protocol.requests`: one builder per endpoint, ids and run inputs
  checked, timeouts and size caps;
- :mod:`~airflow_provider_noxus.protocol.urls`: request URLs, origins, the redirects followed;
- :mod:`~airflow_provider_noxus.protocol.errors`: the typed error of an error answer,
  ``Retry-After``, JSON bodies;
- :mod:`~airflow_provider_noxus.protocol.retry`: what is retried and how long to wait;
- :mod:`~airflow_provider_noxus.protocol.sse`: the run's event stream parsed into events.
"""

from __future__ import annotations

from airflow_provider_noxus.protocol.errors import error_from_response, parse_json, parse_retry_after
from airflow_provider_noxus.protocol.requests import (
    DEFAULT_TIMEOUT_S,
    MAX_ANSWER_BYTES,
    MAX_FILE_BYTES,
    MAX_LIST_ANSWER_BYTES,
    SPOT_SCHEME,
    SYNC_ENDPOINT_HOLD_S,
    SYNC_ENDPOINT_TIMEOUT_S,
    USER_AGENT,
    ApiRequest,
    check_id,
    check_json_inputs,
    create_run_body,
    create_run_request,
    create_run_sync_request,
    default_headers,
    download_file_request,
    get_run_request,
    get_run_status_request,
    get_workflow_request,
    list_runs_request,
    list_workflows_request,
    me_request,
    run_events_request,
    spot_file_id,
    spot_uri,
    stop_run_request,
    upload_file_request,
)
from airflow_provider_noxus.protocol.retry import (
    MIN_BACKOFF_S,
    RETRYABLE_STATUSES,
    RetryPolicy,
    backoff_seconds,
    is_retryable,
    may_have_created_run,
)
from airflow_provider_noxus.protocol.sse import MAX_SSE_EVENT_CHARS, RunEvent, SSEParser
from airflow_provider_noxus.protocol.statuses import FAILURE_STATUSES, TERMINAL_STATUSES, NoxusRunStatus
from airflow_provider_noxus.protocol.urls import (
    DEFAULT_APP_URL,
    DEFAULT_BASE_URL,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    SentOrigin,
    build_url,
    origin,
    origin_of_parts,
    redirect_target,
    run_url,
    without_userinfo,
)

__all__ = [
    "DEFAULT_APP_URL",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_S",
    "FAILURE_STATUSES",
    "MAX_ANSWER_BYTES",
    "MAX_FILE_BYTES",
    "MAX_LIST_ANSWER_BYTES",
    "MAX_REDIRECTS",
    "MAX_SSE_EVENT_CHARS",
    "MIN_BACKOFF_S",
    "REDIRECT_STATUSES",
    "RETRYABLE_STATUSES",
    "SPOT_SCHEME",
    "SYNC_ENDPOINT_HOLD_S",
    "SYNC_ENDPOINT_TIMEOUT_S",
    "TERMINAL_STATUSES",
    "USER_AGENT",
    "ApiRequest",
    "NoxusRunStatus",
    "RetryPolicy",
    "RunEvent",
    "SSEParser",
    "SentOrigin",
    "backoff_seconds",
    "build_url",
    "check_id",
    "check_json_inputs",
    "create_run_body",
    "create_run_request",
    "create_run_sync_request",
    "default_headers",
    "download_file_request",
    "error_from_response",
    "get_run_request",
    "get_run_status_request",
    "get_workflow_request",
    "is_retryable",
    "list_runs_request",
    "list_workflows_request",
    "may_have_created_run",
    "me_request",
    "origin",
    "origin_of_parts",
    "parse_json",
    "parse_retry_after",
    "redirect_target",
    "run_events_request",
    "run_url",
    "spot_file_id",
    "spot_uri",
    "stop_run_request",
    "upload_file_request",
    "without_userinfo",
]
