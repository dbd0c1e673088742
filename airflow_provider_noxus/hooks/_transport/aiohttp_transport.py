"""The async transport: :class:`~airflow_provider_noxus.protocol.ApiRequest` objects sent with
``aiohttp`` sessions shared by every client of the same event loop, base URL and TLS setting.

The shared pool serves every API key of its base URL: the key (and the other default headers of
:func:`protocol.default_headers`) goes in each request, never in the session; no cookie is kept.
Redirects are followed by hand, within the base URL's origin only (:func:`protocol.redirect_target`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from tenacity import AsyncRetrying

from airflow_provider_noxus import protocol
from airflow_provider_noxus._loop_shared import LoopShared
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusError, NoxusTransportError
from airflow_provider_noxus.hooks._transport.errors import (
    CONNECT_TIMEOUT_S,
    MAX_ERROR_BODY_BYTES,
    AnswerBody,
    FailureKind,
    T,
    adopt_renewed_key,
    error_for_response,
    json_object,
    log,
    request_timeout,
    retry_after_first_failure,
    transport_error,
)

#: Connections of the shared request pool to one host (status reads, creates, stops...).
POOL_LIMIT_PER_HOST = 100
#: Seconds an idle pooled connection is kept open for reuse.
KEEPALIVE_S = 30.0

AsyncSleep = Callable[[float], Awaitable[None]]


def _aiohttp_failure(error: BaseException) -> FailureKind:
    if isinstance(error, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return "tls"
    if isinstance(error, aiohttp.ConnectionTimeoutError):
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




def sent_origin(url: str) -> str:
    """The origin ``aiohttp`` sends a request for ``url`` to: yarl's parse, the host as the connector
    takes it (``raw_host``).

    :raises ValueError: a URL ``aiohttp`` would not send.
    """
    parsed = yarl.URL(url)
    if not parsed.absolute or not parsed.raw_host:
        raise ValueError("not an absolute URL with a host")
    return protocol.origin_of_parts(parsed.scheme, parsed.raw_host, parsed.port)


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
    :param reread: ``reread(refused_key, refused_at)`` reads the connection again, past the cache,
        when the server refuses the key (``refused_at``: ``time.monotonic()``).
    """

    def __init__(
        self,
        settings: NoxusConnectionSettings,
        pool: SharedPool,
        *,
        sleep: AsyncSleep,
        reread: Callable[[str, float], Awaitable[NoxusConnectionSettings]] | None = None,
    ) -> None:
        self.pool = pool
        self.session = pool.api
        self.stream_session = pool.streams
        self.sleep = sleep
        self._reread = reread
        self._use(settings)

    def _use(self, settings: NoxusConnectionSettings) -> None:
        """Send with ``settings`` from now on (a renewed key)."""
        self.settings = settings
        self._headers = protocol.default_headers(settings.api_key)

    async def _with_retries(
        self,
        request: protocol.ApiRequest,
        attempt: Callable[[], Awaitable[T]],
        policy: protocol.RetryPolicy | None = None,
    ) -> T:
        """``attempt()`` with retries; after the key is refused, once more with the connection's new key,
        if it has one (see :func:`~.errors.adopt_renewed_key`)."""
        refused = self.settings.api_key
        try:
            return await self._retried(request, attempt, policy)
        except NoxusAuthError:
            if not await self._renew_key(request, refused):
                raise
        return await self._retried(request, attempt, policy)

    async def _renew_key(self, request: protocol.ApiRequest, refused: str) -> bool:
        """Whether the key now differs from ``refused``: renewed since, or read again now."""
        if self.settings.api_key != refused:
            return True
        if self._reread is None:
            return False
        try:
            fresh: NoxusConnectionSettings | Exception = await self._reread(refused, time.monotonic())
        except Exception as error:  # whatever the secrets backend raises: the refusal stands
            fresh = error
        return adopt_renewed_key(request, self.settings, refused, fresh, self._use)

    async def _retried(
        self,
        request: protocol.ApiRequest,
        attempt: Callable[[], Awaitable[T]],
        policy: protocol.RetryPolicy | None = None,
    ) -> T:
        """``attempt()``, then, after a retryable failure, tenacity's retries (see
        :class:`~.errors.FirstFailure`)."""
        started = time.monotonic()
        try:
            return await attempt()
        except NoxusError as error:
            controls, first = retry_after_first_failure(
                request, error, policy or self.settings.retry_policy, started
            )
        result: T = await AsyncRetrying(sleep=self.sleep, **controls)(first.before_async(attempt))
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
                        sent_origin=sent_origin,
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
        """Send ``request`` with retries and return the whole body of its 2xx response (at most
        ``request.max_bytes``).

        :param policy: overrides the connection's retry policy (e.g. one attempt).
        """

        async def attempt() -> bytes:
            response = await self._send(request)
            try:
                body = AnswerBody(request)
                while chunk := await response.content.readany():
                    body.add(chunk)
                return body.content()
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
