"""The two HTTP transports of :class:`~airflow_provider_noxus.hooks.noxus.NoxusHook`, by concern:

- :mod:`.errors`: what both share: the typed errors of failed requests, the retry loop, the key's
  redaction;
- :mod:`.requests_transport`: ``SyncTransport``, a ``requests.Session`` whose every attempt has a
  total deadline (:mod:`.deadline`);
- :mod:`.aiohttp_transport`: ``AsyncTransport``, on ``aiohttp`` sessions shared per (event loop,
  base URL, TLS setting).

Both hold the same safety rules: redirects are followed by hand, within the base URL's origin only
(:func:`protocol.redirect_target`), so the API key never goes anywhere else; no cookie is kept;
every request but the event stream has a total deadline (its ``timeout``); no library exception,
which may hold request headers, is chained into the errors raised. What the endpoints mean is left
to the hook.
"""
from __future__ import annotations

from airflow_provider_noxus.hooks._transport.aiohttp_transport import (
    SHARED_SESSIONS,
    AsyncSleep,
    AsyncTransport,
    default_ssl_context,
)
from airflow_provider_noxus.hooks._transport.errors import REDACTED
from airflow_provider_noxus.hooks._transport.requests_transport import SyncSleep, SyncTransport

__all__ = [
    "REDACTED",
    "SHARED_SESSIONS",
    "AsyncSleep",
    "AsyncTransport",
    "SyncSleep",
    "SyncTransport",
    "default_ssl_context",
]
