"""URLs of the Noxus API and app: request URLs, origins, the redirects that may be followed.

The API key goes in every request, so the rule of where a request may go (the configured origin,
and no other) is written here once: :func:`redirect_target` decides for both transports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from airflow_provider_noxus.exceptions import NoxusRedirectError
from airflow_provider_noxus.protocol.requests import ApiRequest, _seg

DEFAULT_BASE_URL = "https://backend.noxus.ai"
DEFAULT_APP_URL = "https://app.noxus.ai"


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


def run_url(app_url: str, workflow_id: str, run_id: str) -> str:
    """Address of a run in the Noxus web app."""
    return f"{without_userinfo(app_url).rstrip('/')}/workflows/{_seg(workflow_id)}/runs/{_seg(run_id)}"
