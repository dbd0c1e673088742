"""Objects shared by the coroutines of one event loop, per key: made by the first user, closed after the
last one leaves (the triggerer's aiohttp sessions, the shared status watchers).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(Generic[V]):
    def __init__(self, value: V) -> None:
        self.value = value
        self.users = 0


class LoopShared(Generic[K, V]):
    """Reference-counted values, one per (running event loop, key).

    Loops are held weakly, so a loop that is gone takes its table with it; a lock keeps tables of
    loops in different threads consistent.

    :param make: builds the value of a key, for its first user.
    :param close: ends a value after its last user left; it runs shielded, so a cancelled last user
        still closes it.
    :param usable: whether an existing value may serve a new user (else a new one is made).
    """

    def __init__(
        self,
        make: Callable[[K], V],
        close: Callable[[V], Awaitable[None]],
        usable: Callable[[V], bool] = lambda value: True,
    ) -> None:
        self._make = make
        self._close = close
        self._usable = usable
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, _Entry[V]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._closing: set[asyncio.Future[None]] = set()

    def values(self) -> dict[K, V]:
        """The values in use in the running loop, by key."""
        with self._lock:
            table = self._by_loop.get(asyncio.get_running_loop(), {})
            return {key: entry.value for key, entry in table.items()}

    @contextlib.asynccontextmanager
    async def use(self, key: K) -> AsyncIterator[V]:
        """Take a reference on the value of ``key``; release it on every exit path."""
        loop = asyncio.get_running_loop()
        with self._lock:
            table = self._by_loop.setdefault(loop, {})
            entry = table.get(key)
            if entry is None or not self._usable(entry.value):
                entry = table[key] = _Entry(self._make(key))
            entry.users += 1
        try:
            yield entry.value
        finally:
            await self._release(loop, key, entry)

    async def _release(self, loop: asyncio.AbstractEventLoop, key: K, entry: _Entry[V]) -> None:
        with self._lock:
            entry.users -= 1
            if entry.users > 0:
                return
            table = self._by_loop.get(loop, {})
            if table.get(key) is entry:
                del table[key]
        closing = asyncio.ensure_future(self._close(entry.value))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        await asyncio.shield(closing)


class LoopWorker:
    """A shared object that works in one task of the event loop from :meth:`start` to :meth:`close`
    (the status watcher, the event trigger's run feed): what it does is :meth:`_run`."""

    #: The task's name, for the triggerer's task dumps.
    task_name: str = "noxus-loop-worker"
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the work in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    async def close(self) -> None:
        """Stop the work and wait until it has let go of what it holds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
