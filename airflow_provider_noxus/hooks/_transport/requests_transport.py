"""The sync transport: :class:`~airflow_provider_noxus.protocol.ApiRequest` objects sent with one
``requests.Session``, each attempt under a total :class:`~.deadline.Deadline`.

Redirects are followed by hand, within the base URL's origin only (:func:`protocol.redirect_target`),
so the API key never goes anywhere else; no cookie is kept.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import ssl
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import requests
import urllib3
import urllib3.exceptions
import urllib3.util
from tenacity import Retrying

from airflow_provider_noxus import protocol
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusError, NoxusTransportError
from airflow_provider_noxus.hooks._transport.deadline import Deadline, DeadlineAdapter
from airflow_provider_noxus.hooks._transport.errors import (
    CONNECT_TIMEOUT_S,
    MAX_ERROR_BODY_BYTES,
    READ_CHUNK_BYTES,
    AnswerBody,
    FailureKind,
    T,
    adopt_renewed_key,
    causes,
    error_for_response,
    json_object,
    log,
    refusal_reason,
    request_timeout,
    retry_after_first_failure,
    transport_error,
)

SyncSleep = Callable[[float], None]


def _requests_failure(error: BaseException) -> FailureKind:
    linked = list(causes(error))
    if isinstance(error, (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)):
        return "tls"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect_timeout"
    if any(isinstance(c, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for c in linked):
        return "read_timeout"
    if refusal_reason(error) or any(isinstance(c, urllib3.exceptions.NewConnectionError) for c in linked):
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



def sent_origin(url: str) -> str:
    """The origin ``requests`` sends a request for ``url`` to: its own URL preparation, then
    urllib3's parser (the one that picks the host to connect to).

    :raises ValueError: a URL ``requests`` would not send.
    """
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    parts = urllib3.util.parse_url(prepared.url or "")
    return protocol.origin_of_parts(parts.scheme or "", parts.host, parts.port)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that stores and sends none: the API is key-authenticated."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False



class _Session(requests.Session):
    """A ``requests.Session`` that leaves redirects to the transport: even when told not to follow
    one, ``requests`` prepares the next request from the server's ``Location`` (``Response.next``),
    which raises bare ``ValueError`` on some of them and parses them with other rules."""

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(())


class SyncTransport:
    """Sends requests with one ``requests.Session`` (its connection pool is reused).

    :param settings: the connection.
    :param sleep: how to wait between attempts (``time.sleep``; tests inject a recorder).
    :param reread: reads the connection again, past any cache, when the server refuses the key.
    """

    def __init__(
        self,
        settings: NoxusConnectionSettings,
        *,
        sleep: SyncSleep,
        reread: Callable[[], NoxusConnectionSettings] | None = None,
    ) -> None:
        self._sleep = sleep
        self._reread = reread
        self._session = _Session()
        self._session.cookies.set_policy(_NoCookies())
        adapter = DeadlineAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._use(settings)

    def _use(self, settings: NoxusConnectionSettings) -> None:
        """Send with ``settings`` from now on (a renewed key)."""
        self.settings = settings
        self._session.headers.update(protocol.default_headers(settings.api_key))

    def close(self) -> None:
        self._session.close()

    def _with_retries(
        self,
        request: protocol.ApiRequest,
        attempt: Callable[[], T],
        policy: protocol.RetryPolicy | None = None,
    ) -> T:
        """``attempt()`` with retries; after the key is refused, once more with the connection's new key,
        if it has one (see :func:`~.errors.adopt_renewed_key`)."""
        refused = self.settings.api_key
        try:
            return self._retried(request, attempt, policy)
        except NoxusAuthError:
            if not self._renew_key(request, refused):
                raise
        return self._retried(request, attempt, policy)

    def _renew_key(self, request: protocol.ApiRequest, refused: str) -> bool:
        """Whether the key now differs from ``refused``: renewed since, or read again now."""
        if self.settings.api_key != refused:
            return True
        if self._reread is None:
            return False
        try:
            fresh: NoxusConnectionSettings | Exception = self._reread()
        except Exception as error:  # whatever the secrets backend raises: the refusal stands
            fresh = error
        return adopt_renewed_key(request, self.settings, refused, fresh, self._use)

    def _retried(
        self,
        request: protocol.ApiRequest,
        attempt: Callable[[], T],
        policy: protocol.RetryPolicy | None = None,
    ) -> T:
        """``attempt()``, then, after a retryable failure, tenacity's retries (see
        :class:`~.errors.FirstFailure`)."""
        started = time.monotonic()
        try:
            return attempt()
        except NoxusError as error:
            controls, first = retry_after_first_failure(
                request, error, policy or self.settings.retry_policy, started
            )
        return Retrying(sleep=self._sleep, **controls)(first.before(attempt))

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
                        sent_origin=sent_origin,
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
        """Send ``request`` with retries and return the whole body of its 2xx response (at most
        ``request.max_bytes``).

        Each attempt has a total deadline of the request's timeout.

        :param files: multipart parts, as ``requests`` takes them (must be re-sendable: bytes).
        :param policy: overrides the connection's retry policy.
        """

        def attempt() -> bytes:
            with self._deadline(request) as deadline:
                response = self._send(request, files, deadline)
                try:
                    body = AnswerBody(request)
                    try:
                        for chunk in response.iter_content(READ_CHUNK_BYTES):
                            body.add(chunk)
                            if deadline.expired:
                                break
                    except requests.RequestException as error:
                        raise self._failure(request, error, deadline) from None
                    if deadline.disarm():
                        raise transport_error("read_timeout", request, self.settings, TimeoutError())
                    return body.content()
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
