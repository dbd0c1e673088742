"""A total deadline for each ``requests`` attempt, which ``requests`` lacks (its timeouts bound each
read): ``DeadlineAdapter`` mounts urllib3 connections that register their socket with the
thread's :class:`Deadline`, whose timer shuts the socket at expiry.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from typing import Any

import requests.adapters
import urllib3
import urllib3.connection


def _shutdown(sock: socket.socket) -> None:
    """End every blocked read or write on ``sock`` now (a TLS socket too: its file descriptor)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """A total time limit on one sync request, which ``requests`` lacks (its timeouts bound each read).

    While armed (``with Deadline(seconds):``), the connection the request uses registers its socket
    here (see :class:`_DeadlineMixin`); at expiry a timer thread shuts that socket down, which
    ends a blocked read or write at once, whether the server trickles its headers or its body.
    When urllib3 puts the connection back in its pool (the answer was read to its end), the socket
    is detached first: another thread's request may take it from the pool at once, and the timer
    must not cut that one; a deadline that passes after that cuts nothing and is not a timeout.
    """

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        #: The answer was read whole and its connection went back to the pool; no socket since.
        self._released = False
        self._done = False
        self._ends = math.inf
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        Deadline._current.value = self
        self._ends = time.monotonic() + self.seconds
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
            if self._done or (self._released and self._socket is None):
                return
            self.expired = True
            if self._socket is not None:
                _shutdown(self._socket)

    @classmethod
    def attach(cls, sock: socket.socket | None) -> None:
        """Register ``sock`` with the deadline armed in this thread, if any (shut at once past it:
        the timer may have fired while no socket was attached, between two redirects)."""
        deadline: Deadline | None = getattr(cls._current, "value", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            if deadline._done:
                return
            deadline._socket, deadline._released = sock, False
            if deadline.expired or time.monotonic() >= deadline._ends:
                deadline.expired = True
                _shutdown(sock)

    @classmethod
    def release(cls, sock: socket.socket | None) -> None:
        """Detach ``sock`` from the deadline armed in this thread: its connection goes back to the pool."""
        deadline: Deadline | None = getattr(cls._current, "value", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            if deadline._socket is sock:
                deadline._socket, deadline._released = None, True


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


class _DeadlinePoolMixin:
    """Detaches a connection's socket from the thread's :class:`Deadline` before the pool takes the
    connection back (and may hand it to another thread)."""

    def _put_conn(self, conn: Any) -> None:
        Deadline.release(getattr(conn, "sock", None))
        super()._put_conn(conn)  # type: ignore[misc]


class _DeadlineHTTPPool(_DeadlinePoolMixin, urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _DeadlineHTTPSPool(_DeadlinePoolMixin, urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
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
