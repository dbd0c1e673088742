"""Retry rules: one policy for both transports (what is retried, how long to wait between attempts)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from airflow_provider_noxus.exceptions import (
    NoxusApiError,
    NoxusProtocolError,
    NoxusRateLimitedError,
    NoxusServerError,
    NoxusTLSError,
    NoxusTransportError,
)
from airflow_provider_noxus.protocol.requests import ApiRequest

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
