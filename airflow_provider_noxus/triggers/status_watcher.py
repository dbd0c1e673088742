"""Shared status checks in the triggerer: one request for up to 100 waiting runs of a workflow.

Triggers of one process that poll runs of the same connection and workflow share a
:class:`StatusWatcher`. Its rounds come once per the shortest poll interval of its triggers; each round
checks the runs due (each is checked once per its trigger's poll interval) by reading the workflow's
run list, newest first, 100 runs a page, until every due run has been seen or a page budget is spent;
the due runs it did not see get their own ``GET /v1/runs/{id}``, as does the run of a watcher that waits
on one run only (one request either way, without a page of the workflow's history to parse). Whatever
order the server lists in, every due run is checked each round: the budget bounds the list reads, the
per-run reads cover the rest. A fan-out's runs are among the workflow's newest, so a round usually
costs one request per 100 waiting runs.

A trigger is woken only when its run changes (its status, or the nodes running and done), including any
run seen in a page before its turn: a trigger whose run goes on unchanged costs nothing but its share of
a page. The watcher is created with its first trigger and ends with its last; a cancelled trigger leaves
it at once. A page that fails for a transient reason delays that round's unseen runs to the next round
(after three such rounds in a row, the runs are read one by one); a refused key (401/403) is every
waiting trigger's answer.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_noxus._loop_shared import LoopShared
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import NoxusAuthError, NoxusError, NoxusProtocolError
from airflow_provider_noxus.hooks.noxus import SINGLE_ATTEMPT, NoxusAsyncClient, open_async_client
from airflow_provider_noxus.wait import is_transient, run_signature

log = logging.getLogger(__name__)

#: Runs asked for per list page (the API's maximum).
PAGE_SIZE = 100
#: Pages read beyond those the due runs could fill (new runs push older ones down the list).
PAGE_MARGIN = 1
#: Rounds in a row whose list reads failed before a round reads its due runs one by one.
LIST_FAILURES_BEFORE_PER_RUN_READS = 3
#: Per-run reads of one round in flight at once.
PER_RUN_READS_AT_ONCE = 20
#: How long the first round waits for a burst of triggers (a fan-out) to join before it reads.
GATHER_S = 0.05


@dataclass(eq=False, slots=True)
class _Reader:
    """One trigger waiting for its run to change."""

    run_id: str
    interval: float
    after: tuple[Any, ...] | None
    answer: asyncio.Future[Mapping[str, Any]] = field(repr=False)


class StatusWatcher:
    """Status reads shared by the triggers that wait on runs of one workflow, on one connection.

    Use :meth:`StatusWatchers.join` to get one; :meth:`next_change` is a trigger's status read.

    :param settings: the connection.
    :param workflow_id: the workflow whose runs are listed.
    """

    def __init__(self, settings: NoxusConnectionSettings, workflow_id: str) -> None:
        self.settings = settings
        self.workflow_id = workflow_id
        #: Counts, for benchmarks and tests: rounds that checked runs (counted when done), list pages and
        #: per-run reads.
        self.rounds = 0
        self.pages_read = 0
        self.runs_read = 0
        self._readers: dict[str, list[_Reader]] = {}
        #: When each waited-on run was last checked, and its signature then. The run itself is kept
        #: only while it changed and no trigger has been told (runs can be large: their inputs).
        self._checked_at: dict[str, float] = {}
        self._signatures: dict[str, tuple[Any, ...]] = {}
        self._untold: dict[str, Mapping[str, Any]] = {}
        #: Where each run was last seen in the list, and how many runs the list held then. New runs
        #: are added at its top: a run seen at position p of t runs is now at p + (total now - t).
        self._position: dict[str, tuple[int, int]] = {}
        #: How many runs the list held at the last page read (0 while the server has not said).
        self._listed_total = 0
        #: Runs per page as the server last said (it may serve fewer than asked).
        self._page_size = PAGE_SIZE
        self._list_failures = 0
        self._list_usable = True
        #: When the next round starts (loop time); None while no trigger waits.
        self._next_round: float | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- the triggers' side ----------------------------------------------------------------

    async def next_change(
        self, run_id: str, interval: float, after: tuple[Any, ...] | None
    ) -> Mapping[str, Any]:
        """The run once its :func:`run_signature` differs from ``after`` (None: as soon as it is first
        seen), checked once per ``interval`` seconds. Raises the error of a failed read."""
        untold = self._untold.pop(run_id, None)
        if untold is not None and run_signature(untold) != after:
            return untold  # it changed while nobody was waiting
        reader = _Reader(run_id, interval, after, asyncio.get_running_loop().create_future())
        self._readers.setdefault(run_id, []).append(reader)
        self._changed.set()
        try:
            return await reader.answer
        finally:
            readers = self._readers.get(run_id, [])
            with contextlib.suppress(ValueError):
                readers.remove(reader)
            if not readers:
                self._readers.pop(run_id, None)

    def forget(self, run_id: str) -> None:
        """The trigger of ``run_id`` is done with it."""
        for table in (self._checked_at, self._signatures, self._untold, self._position):
            table.pop(run_id, None)

    # ---- the rounds --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"noxus-status-watcher-{self.workflow_id}"
        )

    async def close(self) -> None:
        """Stop the rounds and release the connection (the readers have all left)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with open_async_client(self.settings) as client:
            while True:
                await self._until_due()
                try:
                    await self._round(client)
                except Exception as error:  # a bug here must not leave triggers waiting forever
                    log.exception("Noxus status watcher of workflow %s failed a round", self.workflow_id)
                    failure = NoxusError(f"The shared status watcher failed: {error!r}")
                    self._fail(self._all_readers(), failure)

    async def _until_due(self) -> None:
        """Return at the next round: a tick of the shortest poll interval of the waiting triggers (the
        first one shortly after the first trigger joins)."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            if self._readers and self._next_round is None:
                self._next_round = loop.time() + GATHER_S
            if self._next_round is not None and self._next_round <= loop.time():
                return
            # A timer, not wait_for: wait_for would make a task per round of every watcher.
            timer = None if self._next_round is None else loop.call_at(self._next_round, self._changed.set)
            try:
                await self._changed.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _round(self, client: NoxusAsyncClient) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        readers = self._all_readers()
        if not readers:
            self._next_round = None
            return
        tick = min(reader.interval for reader in readers)
        self._next_round = max(now, (self._next_round or now) + tick)
        due = {
            reader.run_id
            for reader in readers
            if self._checked_at.get(reader.run_id, -math.inf) + reader.interval <= now + tick / 2
        }
        if not due:
            return
        try:
            await self._check(client, due)
        finally:
            self.rounds += 1

    async def _check(self, client: NoxusAsyncClient, due: set[str]) -> None:
        """Check the ``due`` runs: from the list pages as far as the budget goes, the rest one by one."""
        if len(self._readers) == 1:
            # The only run waited on: its own read is one request too, without a page of other runs
            # (the workflow's history) to parse.
            await self._read_one_by_one(client, due)
            return
        unseen = set(due)
        listed = False
        if self._list_usable and self._list_failures < LIST_FAILURES_BEFORE_PER_RUN_READS:
            try:
                await self._read_list(client, unseen)
            except NoxusAuthError as error:
                self._fail(self._all_readers(), error)
                return
            except NoxusError as error:
                if not is_transient(error):
                    log.warning(
                        "The run list of Noxus workflow %s cannot be read (%s); reading runs one by one.",
                        self.workflow_id,
                        error,
                    )
                    self._list_usable = False
                else:
                    self._list_failures += 1
                    log.warning(
                        "Reading the run list of Noxus workflow %s failed (%s); the runs not seen wait for "
                        "the next round.",
                        self.workflow_id,
                        error,
                    )
                    return
            else:
                self._list_failures = 0
                listed = True
        if unseen:
            if listed:
                log.debug("%d runs of workflow %s not in the pages read", len(unseen), self.workflow_id)
            await self._read_one_by_one(client, unseen)

    async def _read_list(self, client: NoxusAsyncClient, unseen: set[str]) -> None:
        """Read list pages until no due run is unseen or the budget is spent; answer what is seen."""
        due = list(unseen)
        budget, budgeted_total = self._page_budget(due), self._listed_total
        page = 1
        while unseen and page <= budget:
            envelope = await client.a_list_runs(
                self.workflow_id, page=page, size=PAGE_SIZE, policy=SINGLE_ATTEMPT
            )
            self.pages_read += 1
            items = envelope.get("items")
            if not isinstance(items, list):
                raise NoxusProtocolError(
                    "The Noxus API answered the run list without an items list.",
                    workflow_id=self.workflow_id,
                )
            used_size = envelope.get("size")
            size = self._page_size = used_size if isinstance(used_size, int) and used_size > 0 else PAGE_SIZE
            total = envelope.get("total")
            if isinstance(total, int) and total >= 0:
                self._listed_total = total
            for index, run in enumerate(items):
                run_id = run.get("id") if isinstance(run, Mapping) else None
                if not isinstance(run_id, str) or run_id not in self._readers:
                    continue
                self._position[run_id] = ((page - 1) * size + index, self._listed_total)
                unseen.discard(run_id)
                self._seen(run_id, run)
            pages = envelope.get("pages")
            if not items or (isinstance(pages, int) and page >= pages):
                return
            if page >= budget and isinstance(pages, int) and pages - page < len(unseen):
                # The rest of the list costs fewer requests than the runs still unseen, one by one
                # (a fan-out's runs deeper than its first triggers could tell).
                budget = pages
            if self._listed_total != budgeted_total:
                # Runs were created since the budget was set: those waited on moved down the list. The
                # first page tells by how much since the last round; later, the runs created meanwhile
                # push every unread run down alike.
                if page == 1:
                    budget = self._page_budget(due)
                else:
                    budget += math.ceil((self._listed_total - budgeted_total) / size)
                budgeted_total = self._listed_total
            page += 1

    def _page_budget(self, due: Iterable[str]) -> int:
        """Pages worth reading for ``due`` runs: enough for their number, and deeper only where the
        pages cost less than the per-run reads they spare (runs last seen deep in the list)."""
        due = list(due)
        least = math.ceil(len(due) / self._page_size) + PAGE_MARGIN
        known_pages = sorted(
            self._now_at(run_id) // self._page_size for run_id in due if run_id in self._position
        )

        def cost(pages: int) -> int:
            return pages + len(known_pages) - bisect.bisect_left(known_pages, pages)

        deeper = {page + 1 + PAGE_MARGIN for page in known_pages} - set(range(least + 1))
        candidates = [least, *deeper]
        return min(candidates, key=lambda pages: (cost(pages), pages))

    def _now_at(self, run_id: str) -> int:
        """Where ``run_id`` is in the list now, as far as the last page read tells: where it was seen,
        moved down by the runs created since."""
        position, total_then = self._position[run_id]
        return position + max(0, self._listed_total - total_then)

    async def _read_one_by_one(self, client: NoxusAsyncClient, run_ids: Iterable[str]) -> None:
        """Read each of ``run_ids`` with its own request, at most :data:`PER_RUN_READS_AT_ONCE` at once."""
        run_ids = list(run_ids)
        if len(run_ids) == 1:
            await self._read_run(client, run_ids[0])
            return
        at_once = asyncio.Semaphore(PER_RUN_READS_AT_ONCE)

        async def read(run_id: str) -> None:
            async with at_once:
                await self._read_run(client, run_id)

        await asyncio.gather(*(read(run_id) for run_id in run_ids))

    async def _read_run(self, client: NoxusAsyncClient, run_id: str) -> None:
        """Read ``run_id``; its triggers get the run if it changed, or the error."""
        try:
            run = await client.a_get_run_status(run_id, policy=SINGLE_ATTEMPT)
        except NoxusError as error:
            self._fail(self._readers.get(run_id, ()), error)
        else:
            self._seen(run_id, run)
        finally:
            self.runs_read += 1

    def _seen(self, run_id: str, run: Mapping[str, Any]) -> None:
        """``run`` was just read: wake the triggers for which it changed, or keep it for the next one to
        ask when none is waiting. A run that goes on unchanged is dropped at once: nothing read in a round
        outlives it (long-lived garbage makes the collector walk the whole heap)."""
        self._checked_at[run_id] = asyncio.get_running_loop().time()
        signature = run_signature(run)
        changed = self._signatures.get(run_id) != signature
        if changed:
            self._signatures[run_id] = signature
        told = False
        for reader in self._readers.get(run_id, ()):
            if not reader.answer.done() and reader.after != signature:
                reader.answer.set_result(run)
                told = True
        if told:
            self._untold.pop(run_id, None)
        elif changed:
            self._untold[run_id] = run

    @staticmethod
    def _fail(readers: Iterable[_Reader], error: BaseException) -> None:
        for reader in list(readers):
            if not reader.answer.done():
                reader.answer.set_exception(error)

    def _all_readers(self) -> list[_Reader]:
        readers = (reader for readers in self._readers.values() for reader in readers)
        return [reader for reader in readers if not reader.answer.done()]


class WatcherSeat:
    """One trigger's status reads through the watcher of its run's workflow (a :data:`StatusWatch`): the
    watcher is joined at the first read, so a trigger that streams never joins, and left by
    :meth:`aclose`.

    :param settings: the connection.
    :param workflow_id: the run's workflow.
    :param run_id: the run.
    :param interval: how often the run is checked (the trigger's poll interval).
    :param log: the trigger's log, told when the run is first checked by the watcher.
    """

    __slots__ = ("_interval", "_joined", "_log", "_run_id", "_settings", "_watcher", "_workflow_id")

    def __init__(
        self,
        settings: NoxusConnectionSettings,
        workflow_id: str,
        run_id: str,
        interval: float,
        log: logging.Logger | Any,
    ) -> None:
        self._settings = settings
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._interval = interval
        self._log = log
        self._joined: contextlib.AbstractAsyncContextManager[StatusWatcher] | None = None
        self._watcher: StatusWatcher | None = None

    async def __call__(self, after: tuple[Any, ...] | None) -> Mapping[str, Any]:
        if self._watcher is None:
            joined = StatusWatchers.join(self._settings, self._workflow_id)
            self._watcher = await joined.__aenter__()
            self._joined = joined
            self._log.info(
                "Noxus run %s: its status is read by the watcher shared by this triggerer's runs of "
                "workflow %s (one list request for up to 100 runs).",
                self._run_id,
                self._workflow_id,
            )
        return await self._watcher.next_change(self._run_id, self._interval, after)

    async def aclose(self) -> None:
        """Leave the watcher (the last trigger to leave ends it)."""
        if self._joined is not None and self._watcher is not None:
            joined, self._joined = self._joined, None
            self._watcher.forget(self._run_id)
            await joined.__aexit__(None, None, None)


def _started_watcher(key: tuple[NoxusConnectionSettings, str]) -> StatusWatcher:
    watcher = StatusWatcher(*key)
    watcher.start()
    return watcher


class StatusWatchers:
    """The watchers of this process, one per (event loop, connection, workflow)."""

    _watchers: LoopShared[tuple[NoxusConnectionSettings, str], StatusWatcher] = LoopShared(
        _started_watcher, StatusWatcher.close
    )

    @classmethod
    def join(
        cls, settings: NoxusConnectionSettings, workflow_id: str
    ) -> contextlib.AbstractAsyncContextManager[StatusWatcher]:
        """The watcher of ``workflow_id`` on this connection, made by its first user and ended by its
        last, on every exit (cancellation included)."""
        return cls._watchers.use((settings, workflow_id))

    @classmethod
    def active(cls) -> list[StatusWatcher]:
        """The watchers of the running event loop."""
        return list(cls._watchers.values().values())
