"""The two HTTP transports of :class:`~airflow_provider_noxus.hooks.noxus.NoxusHook`.

``SyncTransport`` sends :class:`~airflow_provider_noxus.protocol.ApiRequest` objects with a
``requests.Session``; ``AsyncTransport`` with an ``aiohttp.ClientSession`` shared by every client of
the same event loop, base URL and TLS setting. Both apply the same tenacity retry controls (built
once, by :func:`retry_controls`, from :func:`protocol.is_retryable` and
:func:`protocol.backoff_seconds`) and turn every library error into a
:class:`~airflow_provider_noxus.exceptions.NoxusError`. What the endpoints mean is left to the hook.

Both hold the same safety rules: redirects are followed by hand, within the base URL's origin only
(:func:`protocol.redirect_target`), so the API key never goes anywhere else; no cookie is kept; every
request but the event stream has a total deadline (its ``timeout``); no library exception, which may
hold request headers, is chained into the errors raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import logging
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions
import yarl
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from airflow_provider_noxus import protocol
from airflow_provider_noxus._loop_shared import LoopShared
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import (
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
#: Connections of the shared request pool to one host (status reads, creates, stops...).
POOL_LIMIT_PER_HOST = 100
#: Seconds an idle pooled connection is kept open for reuse.
KEEPALIVE_S = 30.0
#: Bytes asked of one read of a response body.
READ_CHUNK_BYTES = 64 * 1024
REDACTED = "***"

#: Retries (warning) and requests (debug: method, path, status; never headers or bodies).
log = logging.getLogger(__name__)

T = TypeVar("T")
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]


# --------------------------------------------------------------------------------------------
# Shared by both transports
# --------------------------------------------------------------------------------------------


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


def _causes(error: BaseException) -> Iterator[BaseException]:
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


def _refusal_reason(error: BaseException) -> str | None:
    """Why a connection could not be opened, when the cause says so: refused, or DNS."""
    for cause in _causes(error):
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
        messages = [getattr(c, "verify_message", None) for c in _causes(error)]
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
        reason = _refusal_reason(error) or "connection failed"
        return NoxusTransportError(f"Could not connect: {reason} {where}.", reached_server=False, **common)
    return NoxusTransportError(
        f"The connection failed before a full answer ({type(error).__name__}) {where}.",
        reached_server=True,
        **common,
    )


def _requests_failure(error: BaseException) -> FailureKind:
    causes = list(_causes(error))
    if isinstance(error, (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)):
        return "tls"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect_timeout"
    if any(isinstance(c, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for c in causes):
        return "read_timeout"
    if _refusal_reason(error) or any(isinstance(c, urllib3.exceptions.NewConnectionError) for c in causes):
        return "connect"
    return "broken"


#: What reading a ``requests`` response may raise: its own errors, and urllib3's when the raw
#: response is read directly.
REQUESTS_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def map_requests_error(
    request: protocol.ApiRequest, settings: NoxusConnectionSettings, error: BaseException
) -> NoxusTransportError:
    """The :class:`NoxusTransportError` for a ``requests`` (or urllib3) failure; the key is never in it."""
    return transport_error(_requests_failure(error), request, settings, error)


#: aiohttp >= 3.10 tells connect timeouts apart; before, both are ServerTimeoutError.
_AIOHTTP_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(aiohttp, "ConnectionTimeoutError", None),) if t is not None
)


def _aiohttp_failure(error: BaseException) -> FailureKind:
    if isinstance(error, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return "tls"
    if isinstance(error, _AIOHTTP_CONNECT_TIMEOUT):
        return "connect_timeout"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "read_timeout"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect"
    return "broken"


def map_aiohttp_error(
    request: protocol.ApiRequest, settings: NoxusConnectionSettings, error: BaseException
) -> NoxusTransportError:
    """The :class:`NoxusTransportError` for an ``aiohttp`` failure (or a timeout)."""
    return transport_error(_aiohttp_failure(error), request, settings, error)


# --------------------------------------------------------------------------------------------
# Sync: requests
# --------------------------------------------------------------------------------------------


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that stores and sends none: the API is key-authenticated."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def _shutdown(sock: socket.socket) -> None:
    """End every blocked read or write on ``sock`` now (a TLS socket too: its file descriptor)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """A total time limit on one sync request, which ``requests`` lacks (its timeouts bound each read).

    While armed (``with Deadline(seconds):``), the connection the request uses registers its socket
    here (see :class:`_DeadlineMixin`); at expiry a timer thread shuts that socket down, which
    ends a blocked read or write at once, whether the server trickles its headers or its body.
    """

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._done = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        Deadline._current.value = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disarm()

    def disarm(self) -> bool:
        """Stop the timer (before the connection goes back to the pool); True if it had expired."""
        with self._lock:
            self._done = True
            self._socket = None
        self._timer.cancel()
        if getattr(Deadline._current, "value", None) is self:
            Deadline._current.value = None
        return self.expired

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._socket is not None:
                _shutdown(self._socket)

    @classmethod
    def attach(cls, sock: socket.socket | None) -> None:
        """Register ``sock`` with the deadline armed in this thread, if any."""
        deadline: Deadline | None = getattr(cls._current, "value", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            if deadline._done:
                return
            deadline._socket = sock
            if deadline.expired:
                _shutdown(sock)


class _DeadlineMixin:
    """Registers an urllib3 connection's socket with the thread's :class:`Deadline`: when it
    connects, and before each request on a connection reused from the pool."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        Deadline.attach(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        Deadline.attach(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlineConnection(_DeadlineMixin, urllib3.connection.HTTPConnection):  # type: ignore[misc]
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, urllib3.connection.HTTPSConnection):  # type: ignore[misc]
    pass


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """``requests``' adapter with connections that honour :class:`Deadline` (through HTTP proxies too;
    a SOCKS proxy keeps per-read timeouts only)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> urllib3.PoolManager:
        manager: urllib3.PoolManager = super().proxy_manager_for(proxy, **kwargs)
        if isinstance(manager, urllib3.ProxyManager):
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


class SyncTransport:
    """Sends requests with one ``requests.Session`` (its connection pool is reused).

    :param settings: the connection.
    :param sleep: how to wait between attempts (``time.sleep``; tests inject a recorder).
    """

    def __init__(self, settings: NoxusConnectionSettings, *, sleep: SyncSleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(protocol.default_headers(settings.api_key))
        self._session.cookies.set_policy(_NoCookies())
        adapter = _DeadlineAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def _with_retries(
        self,
        request: protocol.ApiRequest,
        attempt: Callable[[], T],
        policy: protocol.RetryPolicy | None = None,
    ) -> T:
        """``attempt()``, then, after a retryable failure, tenacity's retries (see :class:`FirstFailure`)."""
        started = time.monotonic()
        try:
            return attempt()
        except NoxusError as error:
            if not protocol.is_retryable(request, error):
                raise
            first = FirstFailure(error)

        def replay_then_attempt() -> T:
            first.replay()
            return attempt()

        policy = policy or self.settings.retry_policy
        return Retrying(sleep=self._sleep, **retry_controls(request, policy, started))(replay_then_attempt)

    def _failure(
        self, request: protocol.ApiRequest, error: BaseException, deadline: Deadline
    ) -> NoxusTransportError:
        """The typed error of a failed attempt: a timeout when its deadline cut it short."""
        if deadline.expired:
            return transport_error("read_timeout", request, self.settings, error)
        return map_requests_error(request, self.settings, error)

    def _send(
        self, request: protocol.ApiRequest, files: Mapping[str, Any] | None, deadline: Deadline
    ) -> requests.Response:
        """One attempt: the response of a 2xx, its body not read yet; else the typed error.

        Same-origin redirects are followed here (see :func:`protocol.redirect_target`).
        """
        timeout = request_timeout(request, self.settings)
        url, params, hops = protocol.build_url(self.settings.base_url, request), dict(request.params), 0
        while True:
            try:
                response = self._session.request(
                    request.method,
                    url,
                    params=params,
                    json=request.json_body,
                    files=files,
                    timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
                    # Per request: a session-level verify=False loses to REQUESTS_CA_BUNDLE in requests.
                    verify=self.settings.verify_ssl,
                    stream=True,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                # Not chained: a requests exception may hold the request and its headers.
                raise self._failure(request, error, deadline) from None
            log.debug("Noxus API %s -> %s", request.endpoint, response.status_code)
            if response.status_code in protocol.REDIRECT_STATUSES:
                with contextlib.closing(response):
                    url = protocol.redirect_target(
                        request,
                        self.settings.base_url,
                        response.url,
                        response.status_code,
                        response.headers.get("Location"),
                        hops,
                    )
                params, hops = {}, hops + 1
                continue
            if response.status_code < 400:
                return response
            with contextlib.closing(response):
                body = b""
                with contextlib.suppress(*REQUESTS_ERRORS):
                    body = response.raw.read(MAX_ERROR_BODY_BYTES, decode_content=True) or b""
                if deadline.expired:
                    raise transport_error("read_timeout", request, self.settings, TimeoutError())
                raise error_for_response(
                    request, response.status_code, body, response.headers, self.settings.api_key
                )

    def _deadline(self, request: protocol.ApiRequest) -> Deadline:
        return Deadline(request_timeout(request, self.settings))

    def call(
        self,
        request: protocol.ApiRequest,
        *,
        files: Mapping[str, Any] | None = None,
        policy: protocol.RetryPolicy | None = None,
    ) -> bytes:
        """Send ``request`` with retries and return the whole body of its 2xx response.

        Each attempt has a total deadline of the request's timeout.

        :param files: multipart parts, as ``requests`` takes them (must be re-sendable: bytes).
        :param policy: overrides the connection's retry policy.
        """

        def attempt() -> bytes:
            with self._deadline(request) as deadline:
                response = self._send(request, files, deadline)
                try:
                    chunks = []
                    try:
                        for chunk in response.iter_content(READ_CHUNK_BYTES):
                            chunks.append(chunk)
                            if deadline.expired:
                                break
                    except requests.RequestException as error:
                        raise self._failure(request, error, deadline) from None
                    if deadline.disarm():
                        raise transport_error("read_timeout", request, self.settings, TimeoutError())
                    return b"".join(chunks)
                finally:
                    deadline.disarm()
                    response.close()

        return self._with_retries(request, attempt, policy)

    def call_json(self, request: protocol.ApiRequest, **kwargs: Any) -> dict[str, Any]:
        """:meth:`call`, its body decoded as a JSON object."""
        return json_object(request, self.call(request, **kwargs), self.settings.api_key)

    def stream_chunks(self, request: protocol.ApiRequest) -> Generator[bytes, None, None]:
        """Open ``request`` (opening is retried) and yield its body chunks as they arrive.

        Opening has a total deadline of the request's timeout; then each read is bounded by it
        (an event stream lasts as long as its run). The response is closed when the generator ends
        or is closed. A failure while reading is raised as a :class:`NoxusTransportError` and not
        retried: the caller resumes.
        """

        def open_stream() -> requests.Response:
            with self._deadline(request) as deadline:
                return self._send(request, None, deadline)

        response = self._with_retries(request, open_stream)
        with contextlib.closing(response):
            try:
                # read1: what has arrived, whatever the framing (iter_content waits for the end of
                # a body that is neither chunked nor sized). urllib3 < 2.3 has no read1.
                if hasattr(response.raw, "read1"):
                    while chunk := response.raw.read1(READ_CHUNK_BYTES, decode_content=True):
                        yield chunk
                else:
                    yield from response.iter_content(chunk_size=None)
            except REQUESTS_ERRORS as error:
                raise map_requests_error(request, self.settings, error) from None


# --------------------------------------------------------------------------------------------
# Async: aiohttp, one session shared per (event loop, base URL, TLS setting)
# --------------------------------------------------------------------------------------------


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context, built once per process (building one costs milliseconds of CPU).

    It trusts the system's CAs and, when ``certifi`` is installed (``requests`` brings it), the same
    bundle as the sync path.
    """
    context = ssl.create_default_context()
    with contextlib.suppress(ImportError):
        import certifi

        context.load_verify_locations(certifi.where())
    return context


def env_proxy(base_url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy for ``base_url`` from ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` (any case), as
    ``requests`` reads them on the sync path; with the credentials in the proxy's URL, if any.

    Read once per shared pool (not per request, as aiohttp's ``trust_env`` does, with two thread
    hops per request); ``.netrc`` is not read: the API takes the key, no other credential.
    """
    url = yarl.URL(base_url)
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None, None
    proxy = urllib.request.getproxies().get(url.scheme)
    if not proxy:
        return None, None
    proxy_url = yarl.URL(proxy if "://" in proxy else f"http://{proxy}")
    return str(proxy_url.with_user(None)), aiohttp.BasicAuth.from_url(proxy_url)


@dataclass
class SharedPool:
    """The two aiohttp sessions shared by every client of one (loop, base URL, TLS setting).

    :param api: short requests, on a pool of at most :data:`POOL_LIMIT_PER_HOST` connections.
    :param streams: event streams, one connection each for as long as they last, with no limit: a
        bounded pool would make the stream past the limit wait for a whole run to end, and would
        starve the short requests behind them.
    :param proxy: the proxy every request goes through (:func:`env_proxy`), if any.
    :param proxy_auth: its credentials, if any.
    """

    api: aiohttp.ClientSession
    streams: aiohttp.ClientSession
    proxy: str | None = None
    proxy_auth: aiohttp.BasicAuth | None = None

    @property
    def closed(self) -> bool:
        return self.api.closed or self.streams.closed

    async def close(self) -> None:
        await asyncio.gather(self.api.close(), self.streams.close())


def _new_session(verify_ssl: bool, limit: int) -> aiohttp.ClientSession:
    """A session whose connector holds at most ``limit`` connections (0: no limit)."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit,
        keepalive_timeout=KEEPALIVE_S,
        ssl=default_ssl_context() if verify_ssl else False,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": protocol.USER_AGENT, "Accept": "application/json"},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
        # The pool is shared by every key of this base URL: a cookie set for one must never be
        # sent with another (and the API, key-authenticated, needs none).
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    # aiohttp >= 3.10 silently resends an idempotent request once after a reset; our retry
    # policy is the only one, as on the sync path (same attempts, waits and budget).
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


def _new_pool(key: tuple[str, bool]) -> SharedPool:
    base_url, verify_ssl = key
    proxy, proxy_auth = env_proxy(base_url)
    return SharedPool(
        api=_new_session(verify_ssl, POOL_LIMIT_PER_HOST),
        streams=_new_session(verify_ssl, 0),
        proxy=proxy,
        proxy_auth=proxy_auth,
    )


class SharedSessions:
    """:class:`SharedPool` objects, one per (loop, base URL, TLS setting): the first user of a key
    creates the pool, the last one closes it."""

    def __init__(self) -> None:
        self._pools: LoopShared[tuple[str, bool], SharedPool] = LoopShared(
            _new_pool, SharedPool.close, usable=lambda pool: not pool.closed
        )

    def pools(self) -> dict[tuple[str, bool], SharedPool]:
        """The open shared pools of the running loop, by (base URL, TLS setting)."""
        return self._pools.values()

    def use(self, base_url: str, verify_ssl: bool) -> contextlib.AbstractAsyncContextManager[SharedPool]:
        """Take a reference on the shared pool for the key; released on every exit path."""
        return self._pools.use((base_url, verify_ssl))


SHARED_SESSIONS = SharedSessions()


class AsyncTransport:
    """Sends requests on shared aiohttp sessions; the API key goes in each request.

    :param settings: the connection.
    :param pool: the shared sessions (owned by :data:`SHARED_SESSIONS`, not closed here).
    :param sleep: how to wait between attempts (``asyncio.sleep``; tests inject a recorder).
    """

    def __init__(
        self, settings: NoxusConnectionSettings, pool: SharedPool, *, sleep: AsyncSleep
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.session = pool.api
        self.stream_session = pool.streams
        self.sleep = sleep
        self._headers = {"X-API-Key": settings.api_key}

    async def _with_retries(
        self,
        request: protocol.ApiRequest,
        attempt: Callable[[], Awaitable[T]],
        policy: protocol.RetryPolicy | None = None,
    ) -> T:
        """``attempt()``, then, after a retryable failure, tenacity's retries (see :class:`FirstFailure`)."""
        started = time.monotonic()
        try:
            return await attempt()
        except NoxusError as error:
            if not protocol.is_retryable(request, error):
                raise
            first = FirstFailure(error)

        async def replay_then_attempt() -> T:
            first.replay()
            return await attempt()

        policy = policy or self.settings.retry_policy
        retrying = AsyncRetrying(sleep=self.sleep, **retry_controls(request, policy, started))
        result: T = await retrying(replay_then_attempt)
        return result

    async def _send(self, request: protocol.ApiRequest) -> aiohttp.ClientResponse:
        """One attempt: the response of a 2xx, its body not read yet; else the typed error.

        The request's timeout bounds the whole attempt, the reading of a 2xx body included (the
        event stream: each read). Same-origin redirects are followed here
        (see :func:`protocol.redirect_target`).
        """
        timeout = request_timeout(request, self.settings)
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        session = self.stream_session if request.stream else self.session
        url, params, hops = protocol.build_url(self.settings.base_url, request), dict(request.params), 0
        while True:
            left = timeout if request.stream else max(ends - loop.time(), 0.001)
            try:
                response = await session.request(
                    request.method,
                    url,
                    params=params,
                    json=request.json_body,
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(
                        total=None if request.stream else left,
                        sock_connect=min(CONNECT_TIMEOUT_S, left),
                        sock_read=timeout,
                    ),
                    allow_redirects=False,
                    proxy=self.pool.proxy,
                    proxy_auth=self.pool.proxy_auth,
                )
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                # Not chained: an aiohttp exception may hold the request's headers.
                raise map_aiohttp_error(request, self.settings, error) from None
            log.debug("Noxus API %s -> %s", request.endpoint, response.status)
            if response.status in protocol.REDIRECT_STATUSES:
                try:
                    url = protocol.redirect_target(
                        request,
                        self.settings.base_url,
                        str(response.url),
                        response.status,
                        response.headers.get("Location"),
                        hops,
                    )
                finally:
                    response.release()
                params, hops = {}, hops + 1
                continue
            if response.status < 400:
                return response
            try:
                body = b""
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    body = await response.content.read(MAX_ERROR_BODY_BYTES)
                raise error_for_response(
                    request, response.status, body, response.headers, self.settings.api_key
                )
            finally:
                response.release()

    async def call(
        self, request: protocol.ApiRequest, *, policy: protocol.RetryPolicy | None = None
    ) -> bytes:
        """Send ``request`` with retries and return the whole body of its 2xx response.

        :param policy: overrides the connection's retry policy (e.g. one attempt).
        """

        async def attempt() -> bytes:
            response = await self._send(request)
            try:
                return await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                raise map_aiohttp_error(request, self.settings, error) from None
            finally:
                response.release()

        return await self._with_retries(request, attempt, policy)

    async def call_json(
        self, request: protocol.ApiRequest, *, policy: protocol.RetryPolicy | None = None
    ) -> dict[str, Any]:
        """:meth:`call`, its body decoded as a JSON object."""
        return json_object(request, await self.call(request, policy=policy), self.settings.api_key)

    async def stream_chunks(self, request: protocol.ApiRequest) -> AsyncGenerator[bytes, None]:
        """Open ``request`` (opening is retried) and yield its body chunks as they arrive.

        The response is released when the generator ends or is closed (use ``contextlib.aclosing``).
        """
        response = await self._with_retries(request, lambda: self._send(request))
        try:
            while True:
                try:
                    chunk = await response.content.readany()
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    raise map_aiohttp_error(request, self.settings, error) from None
                if not chunk:
                    return
                yield chunk
        finally:
            response.release()
