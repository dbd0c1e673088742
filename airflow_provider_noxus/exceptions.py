"""Typed errors of the Noxus provider.

Every message names what a person needs to act: the endpoint, the HTTP status, the server's
``detail``, the request id when the server gave one, and the run and workflow ids when known.
No message ever holds the API key or a whole response body.

Errors that trying again cannot mend (a refused key, a missing workflow, refused inputs, a bad
connection setting, an unusable file, an output over the limit) also derive from Airflow's
``AirflowFailException``: the task fails at once instead of spending its retries on them.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_noxus._compat import AirflowException, AirflowFailException

#: Longest ``detail`` text copied into a message; the rest is cut with a marker.
MAX_DETAIL_CHARS = 500


def shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class NoxusError(AirflowException):
    """Base class of every error raised by the Noxus provider.

    :param message: what went wrong, in words a person understands.
    :param endpoint: ``METHOD /path`` of the request, when the error came from one.
    :param status_code: HTTP status of the response, when there was one.
    :param detail: the server's ``detail`` (already shortened).
    :param request_id: the server's ``x-request-id`` header, when present.
    :param run_id: the Noxus run concerned, when known.
    :param workflow_id: the Noxus workflow concerned, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        status_code: int | None = None,
        detail: Any = None,
        request_id: str | None = None,
        run_id: str | None = None,
        workflow_id: str | None = None,
    ) -> None:
        self.message = message
        self.endpoint = endpoint
        self.status_code = status_code  # type: ignore[assignment]  # AirflowException has an HTTPStatus here
        self.detail = detail
        self.request_id = request_id
        self.run_id = run_id
        self.workflow_id = workflow_id
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = [self.message]
        context = []
        if self.endpoint:
            context.append(self.endpoint)
        if self.status_code is not None:
            context.append(f"HTTP {self.status_code}")
        if self.workflow_id:
            context.append(f"workflow {self.workflow_id}")
        if self.run_id:
            context.append(f"run {self.run_id}")
        if self.request_id:
            context.append(f"request id {self.request_id}")
        if context:
            parts.append(f"({', '.join(context)})")
        if self.detail not in (None, "", []):
            parts.append(f"Server said: {shorten(str(self.detail))}")
        return " ".join(parts)


class NoxusApiError(NoxusError):
    """The Noxus API answered with an error status.

    :param retry_after: the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class NoxusBadRequestError(NoxusApiError, AirflowFailException):
    """400: the request is malformed; sending it again will fail again."""


class NoxusAuthError(NoxusApiError, AirflowFailException):
    """401 or 403: the API key is missing, wrong or lacks rights."""


class NoxusNotFoundError(NoxusApiError, AirflowFailException):
    """404: the workflow, run or file does not exist in the key's workspace."""


class NoxusConflictError(NoxusApiError):
    """409: the request conflicts with the current state of the resource."""


class NoxusValidationError(NoxusApiError, AirflowFailException):
    """422: the server refused the request body (inputs, callback URL, file URI...)."""


class NoxusPayloadTooLargeError(NoxusApiError, AirflowFailException):
    """413: an upload or inline file is over the server's size cap."""


class NoxusRateLimitedError(NoxusApiError):
    """429: too many requests; ``retry_after`` holds the server's wait in seconds, if given."""


class NoxusServerError(NoxusApiError):
    """5xx or 408: a transient server-side failure."""


class NoxusSyncEndpointTimeout(NoxusServerError):
    """504 from the sync create endpoint: the run exists and goes on; wait for it with ``run_id``."""


class NoxusRedirectError(NoxusError, AirflowFailException):
    """The API answered a redirect that is not followed: to another origin (scheme, host or port),
    one that would drop a request's body, or too many. Nothing is sent to the new address, so the
    API key never leaves the configured origin; the connection's host must be fixed.
    """


class NoxusTransportError(NoxusError):
    """The request did not get an HTTP answer: connection refused or reset, DNS, TLS, timeout.

    :param reached_server: False when no byte of the request was sent, because no connection was
        made: the name did not resolve, the connection was refused or not made within the connect
        timeout, or the TLS handshake failed. True (the default) when the request may have reached
        the server and been acted on: a read timeout, a reset or an answer cut short.
    """

    def __init__(self, message: str, *, reached_server: bool = True, **kwargs: Any) -> None:
        #: Whether the request may have reached the server (see the class docstring); a run creation
        #: that failed with False made no run and may be sent again.
        self.reached_server = reached_server
        super().__init__(message, **kwargs)


class NoxusTimeoutError(NoxusTransportError):
    """The server did not answer within the request timeout."""


class NoxusTLSError(NoxusTransportError):
    """The TLS handshake failed (certificate not trusted, wrong host name...); not retried."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("reached_server", False)
        super().__init__(message, **kwargs)


class NoxusConfigurationError(NoxusError, ValueError, AirflowFailException):
    """The Noxus connection or an argument is set wrong (bad base URL, bad extra value...)."""


class NoxusProtocolError(NoxusError):
    """The server answered 2xx with a body that does not follow the API (not JSON, wrong shape)."""


class NoxusAnswerTooLargeError(NoxusError, AirflowFailException):
    """A 2xx answer is larger than its request reads (``ApiRequest.max_bytes``); the rest was not read.
    Not transient: the same request gets the same answer (the status watcher then reads runs one by
    one instead of listing them)."""


class NoxusRunError(NoxusError):
    """A Noxus run ended badly (``failed`` or ``stopped``) or could not be awaited."""

    def __init__(self, message: str, *, status: str | None = None, run_url: str | None = None, **kwargs: Any):
        self.status = status
        self.run_url = run_url
        super().__init__(message, **kwargs)

    def _compose(self) -> str:
        text = super()._compose()
        return f"{text} See {self.run_url}" if self.run_url else text


class NoxusRunTimeoutError(NoxusRunError):
    """The wait for a run passed its deadline (the operator then stops the run it owns)."""


class NoxusFileInputError(NoxusError, ValueError, AirflowFailException):
    """A file input cannot be sent: missing file, over the size cap, or a refused URL."""


class NoxusOutputTooLargeError(NoxusRunError, AirflowFailException):
    """A run's output is over the size that may be returned into XCom."""


class NoxusOutputValidationError(NoxusRunError, AirflowFailException):
    """A completed run's output does not fit the task's ``output_model``; a retry would read the same
    output, so the task fails at once.

    :param fields: the locations (``answer``, ``sources.0.url``) of the fields that do not fit.
    """

    def __init__(self, message: str, *, fields: list[str], **kwargs: Any) -> None:
        self.fields = fields
        super().__init__(message, **kwargs)
