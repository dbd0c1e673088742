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

The two transports are imported when first used (module ``__getattr__``), not with this package.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_provider_noxus.hooks._transport.errors import REDACTED

if TYPE_CHECKING:
    from airflow_provider_noxus.hooks._transport.aiohttp_transport import (
        SHARED_SESSIONS,
        AsyncSleep,
        AsyncTransport,
        default_ssl_context,
    )
    from airflow_provider_noxus.hooks._transport.requests_transport import SyncSleep, SyncTransport

#: Where each transport name lives: imported on first use, so a DAG file (which imports the hook
#: through an operator) pays neither for ``aiohttp`` (the triggerer's) nor for ``requests`` (sent
#: only when a task runs).
_LAZY_NAMES = {
    "SHARED_SESSIONS": "aiohttp_transport",
    "AsyncSleep": "aiohttp_transport",
    "AsyncTransport": "aiohttp_transport",
    "default_ssl_context": "aiohttp_transport",
    "SyncSleep": "requests_transport",
    "SyncTransport": "requests_transport",
}

__all__ = [
    "REDACTED",
    "SHARED_SESSIONS",
    "AsyncSleep",
    "AsyncTransport",
    "SyncSleep",
    "SyncTransport",
    "default_ssl_context",
]


def __getattr__(name: str) -> Any:
    """Import a transport's module when one of its names is first asked for (PEP 562)."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
