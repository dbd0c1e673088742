"""The Noxus connection: its fields, how they are read and checked, and its form in the Airflow UI.

Connection fields: host = base URL (default ``https://backend.noxus.ai``), password = API key.
Extras: ``timeout`` (seconds, default 30), ``verify_ssl`` (default true), ``retry_attempts``
(default 5), ``max_backoff`` (seconds, default 30), ``app_url`` (where run links point) and
``scheme`` (``http`` or ``https``, used when the host has no scheme).

How the scheme is chosen: a host written as a full URL keeps its scheme (JSON form
``{"conn_type": "noxus", "host": "http://127.0.0.1:8765", "password": "KEY"}``, or Airflow's URI form
with the scheme inside, ``noxus://http://:KEY@127.0.0.1:8765``); a bare host name takes the
``scheme`` extra (``noxus://:KEY@127.0.0.1:8765/?scheme=http&timeout=10``), else ``https``. The
connection's port is added when the host has none; a trailing ``/v1`` is dropped (paths add it).

Airflow 3 builds the connection form from the provider info's ``conn-fields``
(:mod:`airflow_provider_noxus.get_provider_info`); Airflow 2 asks the hook, which answers with
:func:`connection_form_widgets` and :func:`ui_field_behaviour`, built from the same description.
The connection cache of the triggerer lives here too, so that every reading of a connection is in one
module (that is what takes it a little over 400 lines).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_noxus import protocol
from airflow_provider_noxus._compat import aget_connection, amask_secret
from airflow_provider_noxus.exceptions import NoxusConfigurationError

if TYPE_CHECKING:
    from airflow_provider_noxus._compat import Connection

CONNECTION_TYPE = "noxus"


@dataclass(frozen=True)
class NoxusConnectionSettings:
    """A Noxus connection, read and checked once.

    :param conn_id: Airflow connection id, for messages.
    :param base_url: API root, scheme included, no trailing slash.
    :param api_key: the key sent as ``X-API-Key``; never shown by ``repr``.
    :param timeout: seconds one request may take in all (connect, send, answer); the event stream's
        longest silence between two chunks.
    :param verify_ssl: whether TLS certificates are checked.
    :param app_url: root of the Noxus web app, for run links.
    :param retry_policy: how hard each request is tried.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    timeout: float = protocol.DEFAULT_TIMEOUT_S
    verify_ssl: bool = True
    app_url: str = protocol.DEFAULT_APP_URL
    retry_policy: protocol.RetryPolicy = field(default_factory=protocol.RetryPolicy)

    def run_url(self, workflow_id: str, run_id: str) -> str:
        """Address of a run in the Noxus web app."""
        return protocol.run_url(self.app_url, workflow_id, run_id)


# --------------------------------------------------------------------------------------------
# Reading the connection
# --------------------------------------------------------------------------------------------


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    """An extra by its name, or by Airflow 2's old prefixed name; empty strings count as unset."""
    value = extras.get(name, extras.get(f"extra__noxus__{name}"))
    return None if value == "" else value


#: Largest ``timeout`` extra: one day (sockets and timers refuse much larger numbers).
MAX_TIMEOUT_S = 86400.0


def _number(
    conn_id: str,
    extras: Mapping[str, Any],
    name: str,
    default: float,
    minimum: float,
    maximum: float = math.inf,
) -> float:
    value = _extra(extras, name)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not minimum <= number <= maximum:
        within = f">= {minimum:g}" if maximum == math.inf else f"within {minimum:g}..{maximum:g}"
        raise NoxusConfigurationError(
            f"Noxus connection {conn_id!r}: extra {name!r} must be a finite number {within}, not {value!r}."
        )
    return number


def _boolean(conn_id: str, extras: Mapping[str, Any], name: str, default: bool) -> bool:
    value = _extra(extras, name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise NoxusConfigurationError(
        f"Noxus connection {conn_id!r}: extra {name!r} must be true or false, not {value!r}."
    )


#: What an API key may hold: visible ASCII, inner spaces and tabs. Both HTTP libraries refuse
#: control characters in a header, and encode other characters differently (latin-1 or UTF-8).
_API_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


def _api_key(conn_id: str, password: str | None) -> str:
    """The connection's key without surrounding whitespace (a pasted trailing newline is common).

    :raises NoxusConfigurationError: naming the connection, never showing the key.
    """
    key = (password or "").strip()
    if not key:
        raise NoxusConfigurationError(
            f"Noxus connection {conn_id!r} has no API key: put it in the connection's password field."
        )
    if not _API_KEY.fullmatch(key):
        raise NoxusConfigurationError(
            f"Noxus connection {conn_id!r}: the API key (password field) holds characters that cannot be "
            "sent in an HTTP header (a line break, a control character or a non-ASCII character): "
            "paste the key again, as Noxus shows it."
        )
    return key


def _base_url(conn_id: str, host: str | None, port: int | None, scheme: Any) -> str:
    """The API root from the host field; a ``user:password@`` in it is dropped (the key goes in
    the password field; the API reads no other credential), so no URL shown or stored holds one.
    """
    host = protocol.without_userinfo((host or "").strip())
    if not host:
        return protocol.DEFAULT_BASE_URL
    if scheme is not None and str(scheme).lower() not in {"http", "https"}:
        raise NoxusConfigurationError(f"Noxus connection {conn_id!r}: extra 'scheme' must be http or https.")
    if "://" in host:
        given = host.split("://", 1)[0].lower()
        if scheme is not None and str(scheme).lower() != given:
            raise NoxusConfigurationError(
                f"Noxus connection {conn_id!r}: the host says {given}:// but extra 'scheme' says {scheme}; "
                "remove one."
            )
    else:
        host = f"{str(scheme or 'https').lower()}://{host}"
    parts = urlsplit(host)
    try:
        given_port = parts.port
    except ValueError:
        given_port = -1
    if parts.scheme not in {"http", "https"} or not parts.hostname or given_port == -1:
        raise NoxusConfigurationError(
            f"Noxus connection {conn_id!r}: the host {host!r} is not a base URL like https://backend.noxus.ai."
        )
    netloc = parts.netloc if given_port is not None or not port else f"{parts.netloc}:{port}"
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def settings_from_connection(
    conn: Connection, *, retry_policy: protocol.RetryPolicy | None = None
) -> NoxusConnectionSettings:
    """Check a Noxus connection (the caller registers the API key with the secrets masker).

    :param conn: the Airflow connection.
    :param retry_policy: overrides the policy built from the extras.
    """
    conn_id = conn.conn_id or "?"
    api_key = _api_key(conn_id, conn.password)
    extras = conn.extra_dejson
    base_url = _base_url(conn_id, conn.host, conn.port, _extra(extras, "scheme"))
    attempts = _number(conn_id, extras, "retry_attempts", protocol.RetryPolicy.max_attempts, 1)
    if attempts != int(attempts):
        raise NoxusConfigurationError(
            f"Noxus connection {conn_id!r}: extra 'retry_attempts' must be an integer."
        )
    policy = retry_policy or protocol.RetryPolicy(
        max_attempts=int(attempts),
        backoff_max=_number(conn_id, extras, "max_backoff", protocol.RetryPolicy.backoff_max, 0),
    )
    app_url = _extra(extras, "app_url") or (
        protocol.DEFAULT_APP_URL if base_url == protocol.DEFAULT_BASE_URL else base_url
    )
    return NoxusConnectionSettings(
        conn_id=conn_id,
        base_url=base_url,
        api_key=api_key,
        timeout=_number(conn_id, extras, "timeout", protocol.DEFAULT_TIMEOUT_S, 0.001, MAX_TIMEOUT_S),
        verify_ssl=_boolean(conn_id, extras, "verify_ssl", True),
        app_url=protocol.without_userinfo(str(app_url).strip()).rstrip("/"),
        retry_policy=policy,
    )


# --------------------------------------------------------------------------------------------
# Reading it from async code, once per process and minute
# --------------------------------------------------------------------------------------------

def renewed_settings(
    current: NoxusConnectionSettings, fresh: NoxusConnectionSettings
) -> NoxusConnectionSettings | None:
    """``current`` with the key of ``fresh`` (the connection read again after ``current``'s key was
    refused), when the connection now holds another key for the same base URL; else None.

    A key read for another base URL is not taken: it would be sent to the old one.
    """
    if fresh.api_key == current.api_key or fresh.base_url != current.base_url:
        return None
    return dataclasses.replace(current, api_key=fresh.api_key)


#: Seconds a connection read by an async client is reused by later ones in this process.
CONNECTION_CACHE_TTL_S = 60.0

#: (connection id, retry policy override, hash of its AIRFLOW_CONN_* variable).
_CacheKey = tuple[str, protocol.RetryPolicy | None, int]


@dataclass(frozen=True)
class _CacheEntry:
    read_at: float
    expires: float
    settings: NoxusConnectionSettings


class AsyncConnectionCache:
    """Noxus connections read by the async clients of this process, kept :data:`CONNECTION_CACHE_TTL_S`.

    A triggerer that starts thousands of triggers (a fan-out) reads each connection once instead of
    once per trigger, through the secrets backend; concurrent first reads wait for one read. A
    connection changed in the metadata database or a secrets backend (a rotated key) reaches new
    triggers after at most the TTL, or at once when a client finds its key refused
    (:meth:`read_after_refusal`). A connection given as an ``AIRFLOW_CONN_*`` environment variable is
    cached by its value, so a change there counts at once. Entries past their TTL, and those of a
    variable's former values, are dropped whenever a connection is read.
    """

    def __init__(self) -> None:
        self._entries: dict[_CacheKey, _CacheEntry] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    def __len__(self) -> int:
        """Connections held (one per connection id, retry policy override and variable value)."""
        return len(self._entries)

    async def read(self, conn_id: str, retry_policy: protocol.RetryPolicy | None) -> NoxusConnectionSettings:
        """The checked settings of ``conn_id``, from the cache or read now (the key registered with the
        secrets masker)."""
        key = self._key(conn_id, retry_policy)
        cached = self._fresh(key)
        if cached is not None:
            return cached
        async with self._lock(conn_id):
            cached = self._fresh(key)
            if cached is not None:
                return cached
            return await self._read_now(key)

    async def read_after_refusal(
        self, conn_id: str, refused_key: str, refused_at: float
    ) -> NoxusConnectionSettings:
        """``conn_id`` read again, past the cache, because the server refused ``refused_key`` at
        ``refused_at`` (``time.monotonic()``); it replaces what the cache held.

        What the cache learnt since answers for it: a read that started after the refusal, or one that
        found another key. Clients refused together (a rotated key) cause one read between them.
        """
        async with self._lock(conn_id):
            for key, entry in self._entries.items():
                if key[0] == conn_id and (
                    entry.read_at >= refused_at or entry.settings.api_key != refused_key
                ):
                    return entry.settings
            self.forget(conn_id)
            return await self._read_now(self._key(conn_id, None))

    def forget(self, conn_id: str | None = None) -> None:
        """Drop ``conn_id`` (None: every connection): the next client reads it again."""
        for key in [key for key in self._entries if conn_id in (None, key[0])]:
            del self._entries[key]

    @staticmethod
    def _key(conn_id: str, retry_policy: protocol.RetryPolicy | None) -> _CacheKey:
        return (conn_id, retry_policy, hash(os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")))

    def _lock(self, conn_id: str) -> asyncio.Lock:
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        return locks.setdefault(conn_id, asyncio.Lock())

    async def _read_now(self, key: _CacheKey) -> NoxusConnectionSettings:
        """Read the connection of ``key``, cache it and drop the entries it outdates."""
        conn_id, retry_policy, _ = key
        read_at = time.monotonic()
        conn = await aget_connection(conn_id)
        settings = settings_from_connection(conn, retry_policy=retry_policy)
        await amask_secret(settings.api_key)
        now = time.monotonic()
        stale = [
            old
            for old, entry in self._entries.items()
            if entry.expires <= now or (old[:2] == key[:2] and old != key)
        ]
        for old in stale:
            del self._entries[old]
        self._entries[key] = _CacheEntry(read_at, now + CONNECTION_CACHE_TTL_S, settings)
        return settings

    def _fresh(self, key: _CacheKey) -> NoxusConnectionSettings | None:
        entry = self._entries.get(key)
        return entry.settings if entry is not None and entry.expires > time.monotonic() else None


CONNECTION_CACHE = AsyncConnectionCache()


# --------------------------------------------------------------------------------------------
# The form (Airflow 2; Airflow 3 reads conn-fields from get_provider_info)
# --------------------------------------------------------------------------------------------


def _connection_type_info() -> dict[str, Any]:
    from airflow_provider_noxus.get_provider_info import get_provider_info

    return next(
        entry
        for entry in get_provider_info()["connection-types"]
        if entry["connection-type"] == CONNECTION_TYPE
    )


def connection_form_widgets() -> dict[str, Any]:
    """Form fields of the extras, built from the provider info's ``conn-fields``.

    Airflow 2 accepts only string, integer, boolean and password fields: a ``number`` is a
    string field checked as a number (the hook reads numbers from strings).
    """
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional, Regexp

    widgets: dict[str, Any] = {}
    for name, spec in _connection_type_info()["conn-fields"].items():
        schema = spec["schema"]
        types = set(schema["type"]) if isinstance(schema["type"], list) else {schema["type"]}
        label = lazy_gettext(spec["label"])
        description = spec.get("description", "")
        if "boolean" in types:
            widgets[name] = BooleanField(label, default=schema.get("default"), description=description)
            continue
        validators: list[Any] = [Optional()]
        if "integer" in types:
            field_class: Any = IntegerField
            validators.append(NumberRange(min=schema.get("minimum"), max=schema.get("maximum")))
        else:
            field_class = StringField
            if "number" in types:
                validators.append(Regexp(r"^\s*\d+(\.\d+)?\s*$", message="Enter a number of seconds."))
        default = schema.get("default")
        widgets[name] = field_class(
            label,
            widget=BS3TextFieldWidget(),
            default=str(default) if default is not None and field_class is StringField else default,
            description=description,
            validators=validators,
        )
    return widgets


def ui_field_behaviour() -> dict[str, Any]:
    """Hidden, relabelled and placeholder fields, from the provider info's ``ui-field-behaviour``."""
    behaviour = _connection_type_info()["ui-field-behaviour"]
    return {key.replace("-", "_"): value for key, value in behaviour.items()}


__all__ = [
    "CONNECTION_CACHE",
    "CONNECTION_TYPE",
    "AsyncConnectionCache",
    "NoxusConnectionSettings",
    "connection_form_widgets",
    "renewed_settings",
    "settings_from_connection",
    "ui_field_behaviour",
]
