"""What both transports share: the typed errors of failed requests, the retry loop, the answer rules.

Both transports (:mod:`.requests_transport`, :mod:`.aiohttp_transport`) apply the same tenacity retry
controls (built once, by :func:`retry_controls`, from :func:`protocol.is_retryable` and
:func:`protocol.backoff_seconds`) and turn every library error into a
:class:`~airflow_provider_noxus.exceptions.NoxusError` through :func:`transport_error`. No library
exception, which may hold request headers, is chained into the errors raised; the API key is cut
from every body before it is shown (:func:`redact`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar

from tenacity import RetryCallState, retry_if_exception

from airflow_provider_noxus import protocol
from airflow_provider_noxus.connection import NoxusConnectionSettings, renewed_settings
from airflow_provider_noxus.exceptions import (
    NoxusAnswerTooLargeError,
    NoxusError,
    NoxusProtocolError,
    NoxusTimeoutError,
    NoxusTLSError,
    NoxusTransportError,
)

#: Longest wait for a TCP (and TLS) connection, whatever the read timeout.
CONNECT_TIMEOUT_S = 10.0
#: Bytes of an error response read to build its message; the rest is never read.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Bytes asked of one read of a response body.
READ_CHUNK_BYTES = 64 * 1024
#: What stands for the API key wherever a server echoed it.
REDACTED = "***"

#: Retries (warning) and requests (debug: method, path, status; never headers or bodies).
log = logging.getLogger("airflow_provider_noxus.hooks._transport")

T = TypeVar("T")


def redact(data: bytes, secret: str) -> bytes:
    """``data`` with every copy of ``secret`` replaced (a server may echo request headers)."""
    return data.replace(secret.encode(), REDACTED.encode()) if secret else data


def error_for_response(
    request: protocol.ApiRequest, status: int, body: bytes, headers: Mapping[str, str], api_key: str
) -> NoxusError:
    """The typed error of an error response, its body cleaned of the API key."""
    return protocol.error_from_response(request, status, redact(body, api_key), headers)


def json_object(request: protocol.ApiRequest, body: bytes, api_key: str) -> dict[str, Any]:
    """Decode a 2xx body that must be a JSON object."""
    payload = protocol.parse_json(request, redact(body, api_key))
    if not isinstance(payload, dict):
        raise NoxusProtocolError(
            f"The Noxus API answered with JSON {type(payload).__name__}, not an object.",
            endpoint=request.endpoint,
            run_id=request.run_id,
            workflow_id=request.workflow_id,
        )
    return payload


class AnswerBody:
    """The body of a 2xx answer as it is read, at most ``request.max_bytes``."""

    def __init__(self, request: protocol.ApiRequest) -> None:
        self.request = request
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        """Keep ``chunk``; raise :class:`NoxusAnswerTooLargeError` once the body passes the cap (the
        caller closes the response: the rest is never read)."""
        self._size += len(chunk)
        if self._size > self.request.max_bytes:
            raise NoxusAnswerTooLargeError(
                f"The Noxus API's answer is larger than {self.request.max_bytes} bytes, the most read for "
                "this request; the rest was not read.",
                endpoint=self.request.endpoint,
                run_id=self.request.run_id,
                workflow_id=self.request.workflow_id,
            )
        self._chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self._chunks)


def request_timeout(request: protocol.ApiRequest, settings: NoxusConnectionSettings) -> float:
    """Seconds ``request`` may take in all (the event stream: between two chunks)."""
    return request.timeout if request.timeout is not None else settings.timeout


def _describe_failure(error: BaseException | None) -> str:
    if isinstance(error, NoxusError) and error.status_code is not None:
        return f"HTTP {error.status_code}"
    return error.message if isinstance(error, NoxusError) else type(error).__name__


def retry_controls(
    request: protocol.ApiRequest, policy: protocol.RetryPolicy, started: float
) -> dict[str, Any]:
    """Keyword arguments of ``tenacity.Retrying`` / ``AsyncRetrying`` for ``request``.

    Retries what :func:`protocol.is_retryable` allows, waits :func:`protocol.backoff_seconds`, and
    stops after ``policy.max_attempts`` attempts or when the next attempt would start past
    ``policy.total_budget`` seconds after ``started`` (``time.monotonic()``). Time spent includes the
    waits asked of ``sleep`` (``idle_for``), so the budget holds even when a test injects a sleep that
    returns at once.
    """

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return protocol.backoff_seconds(policy, state.attempt_number, error or NoxusError("no error"))

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        elapsed = max(time.monotonic() - started, state.idle_for)
        return elapsed + (getattr(state, "upcoming_sleep", 0.0) or 0.0) > policy.total_budget

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "Noxus API %s failed (%s); attempt %d of %d in %.1f s.",
            request.endpoint,
            _describe_failure(error),
            state.attempt_number + 1,
            policy.max_attempts,
            state.upcoming_sleep,
        )

    return {
        "retry": retry_if_exception(lambda error: protocol.is_retryable(request, error)),
        "wait": wait,
        "stop": stop,
        "before_sleep": before_sleep,
        "reraise": True,
    }


def retry_after_first_failure(
    request: protocol.ApiRequest, error: NoxusError, policy: protocol.RetryPolicy, started: float
) -> tuple[dict[str, Any], FirstFailure]:
    """What a transport's tenacity loop takes after a first attempt, made outside tenacity, failed with
    ``error``: the keyword arguments of ``Retrying``/``AsyncRetrying``, and the failure to replay as
    its attempt 1 (see :class:`FirstFailure`).

    :param started: ``time.monotonic()`` when the first attempt started (the budget counts from it).
    :raises NoxusError: ``error`` itself, when it is not retryable.
    """
    if not protocol.is_retryable(request, error):
        raise error
    return retry_controls(request, policy, started), FirstFailure(error)


def adopt_renewed_key(
    request: protocol.ApiRequest,
    current: NoxusConnectionSettings,
    refused: str,
    fresh: NoxusConnectionSettings | Exception,
    use: Callable[[NoxusConnectionSettings], None],
) -> bool:
    """Whether to send ``request`` again after the server refused its key (401, 403) and the
    connection was read again: then ``use`` was given the settings with the new key.

    Both transports renew a refused key this way, once per refusal: a rotated key is taken from the
    connection, a key still refused fails the request. Logged, never with a key.

    :param current: what the transport sends with now (another request may have renewed it while
        the connection was read).
    :param refused: the key the server refused.
    :param fresh: the connection as read again, or the error of reading it.
    :param use: makes the transport send with the renewed settings from now on.
    """
    if current.api_key != refused:
        return True  # renewed meanwhile, by a request refused at the same time
    if isinstance(fresh, Exception):
        log.warning(
            "The Noxus API refused the key of connection %r (%s); reading the connection again failed: %s.",
            current.conn_id,
            request.endpoint,
            type(fresh).__name__,
        )
        return False
    renewed = renewed_settings(current, fresh)
    if renewed is None:
        return False
    log.warning(
        "The Noxus API refused the key of connection %r (%s); the connection now holds another key: "
        "sending again with it.",
        current.conn_id,
        request.endpoint,
    )
    use(renewed)
    return True


class FirstFailure:
    """The failure of a first attempt made outside tenacity, replayed as tenacity's attempt 1.

    Most requests succeed at once: sending the first attempt directly spares the cost of a
    tenacity loop (about 60-90 µs of CPU per call, measured), which matters for a triggerer that
    checks thousands of runs. Only a retryable failure enters the loop; it sees that failure as its
    first attempt, so attempts, waits and budget are as if tenacity had made it.
    """

    def __init__(self, error: NoxusError) -> None:
        self._error: NoxusError | None = error

    def replay(self) -> None:
        """Raise the first failure, the first time only."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def before(self, attempt: Callable[[], T]) -> Callable[[], T]:
        """``attempt``, its first call replaced by the first failure (for ``Retrying``)."""

        def replay_then_attempt() -> T:
            self.replay()
            return attempt()

        return replay_then_attempt

    def before_async(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """:meth:`before` for ``AsyncRetrying``, which awaits only coroutine functions."""

        async def replay_then_attempt() -> T:
            self.replay()
            return await attempt()

        return replay_then_attempt


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and everything it wraps (``__cause__``, ``__context__``, ``args``, ``reason``)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def refusal_reason(error: BaseException) -> str | None:
    """Why a connection could not be opened, when the cause says so: refused, or DNS."""
    for cause in causes(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror) or type(cause).__name__ in {
            "NameResolutionError",
            "ClientConnectorDNSError",
        }:
            return "host name not found"
    return None


FailureKind = Literal["tls", "connect_timeout", "read_timeout", "connect", "broken"]


def transport_error(
    kind: FailureKind, request: protocol.ApiRequest, settings: NoxusConnectionSettings, error: BaseException
) -> NoxusTransportError:
    """The typed error of a request that got no HTTP answer, in words a person can act on.

    ``connect_timeout``, ``connect`` (refused, DNS) and ``tls`` never reached the server (a run
    creation may be retried); ``read_timeout`` and ``broken`` (reset, closed early) may have.
    """
    common: dict[str, Any] = {
        "endpoint": request.endpoint,
        "run_id": request.run_id,
        "workflow_id": request.workflow_id,
    }
    where = f"(Noxus API at {settings.base_url})"
    if kind == "tls":
        messages = [getattr(c, "verify_message", None) for c in causes(error)]
        reason = (
            "certificate verify failed: " + next(m for m in messages if m)
            if any(messages)
            else "handshake failed"
        )
        return NoxusTLSError(
            f"TLS failure: {reason} {where}. If this self-hosted Noxus uses a private certificate, trust "
            "its CA or set verify_ssl to false in the connection's extras.",
            **common,
        )
    if kind == "connect_timeout":
        return NoxusTimeoutError(
            f"No connection within {CONNECT_TIMEOUT_S:g} s {where}.", reached_server=False, **common
        )
    if kind == "read_timeout":
        timeout = request_timeout(request, settings)
        message = (
            f"The event stream sent nothing for {timeout:g} s {where}."
            if request.stream
            else f"No complete answer within the {timeout:g} s timeout {where}."
        )
        return NoxusTimeoutError(message, reached_server=True, **common)
    if kind == "connect":
        reason = refusal_reason(error) or "connection failed"
        return NoxusTransportError(f"Could not connect: {reason} {where}.", reached_server=False, **common)
    return NoxusTransportError(
        f"The connection failed before a full answer ({type(error).__name__}) {where}.",
        reached_server=True,
        **common,
    )

