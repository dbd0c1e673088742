"""Answers of the Noxus API: the typed error of an error answer, ``Retry-After``, JSON bodies."""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from airflow_provider_noxus.exceptions import (
    NoxusApiError,
    NoxusAuthError,
    NoxusBadRequestError,
    NoxusConflictError,
    NoxusNotFoundError,
    NoxusPayloadTooLargeError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusServerError,
    NoxusSyncEndpointTimeout,
    NoxusValidationError,
    shorten,
)
from airflow_provider_noxus.protocol.requests import ApiRequest

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
    actually wait is :func:`~airflow_provider_noxus.protocol.backoff_seconds`'s decision (floored and
    capped).
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
