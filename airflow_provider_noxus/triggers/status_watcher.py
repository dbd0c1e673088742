"""Shared status checks in the triggerer: one request for up to 100 waiting runs of a workflow.

Triggers of one process that poll runs of the same connection and workflow share a
:class:`StatusWatcher`. When some of its runs are due for a status read (each trigger asks once per
its own poll interval), the watcher reads the workflow's run list, newest first, 100 runs a page,
until every due run has been seen or a page budget is spent; the due runs it did not see get their
own ``GET /v1/runs/{id}``. Whatever order the server lists in, every due run gets its status each
round: the budget bounds the list reads, the per-run reads cover the rest. A fan-out's runs are among
the workflow's newest, so a round usually costs one request per 100 waiting runs.

A run seen in the list with a final status (or awaiting feedback) answers its trigger at once, even
before its turn. The watcher is created with its first trigger and ends with its last; a cancelled
trigger leaves it at once. A page that fails for a transient reason delays that round's unseen runs
to the next round (after three such rounds in a row, the runs are read one by one); a refused key
(401/403) is every waiting trigger's answer.
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
from airflow_provider_noxus.protocol import NoxusRunStatus
from airflow_provider_noxus.wait import is_transient

log = logging.getLogger(__name__)

#: Runs asked for per list page (the API's maximum).
PAGE_SIZE = 100
#: Pages read beyond those the due runs could fill (new runs push older ones down the list).
PAGE_MARGIN = 1
#: Rounds in a row whose list reads failed before a round reads its due runs one by one.
LIST_FAILURES_BEFORE_PER_RUN_READS = 3
#: Per-run reads of one round in flight at once.
PER_RUN_READS_AT_ONCE = 20
#: How long a round waits for a burst of triggers (a fan-out) to join before it reads.
GATHER_S = 0.05
#: Statuses that answer a trigger at once, before its turn: the wait ends (or may end) on them.
WAKING_STATUSES = frozenset(
    {
        NoxusRunStatus.COMPLETED.value,
        NoxusRunStatus.FAILED.value,
        NoxusRunStatus.STOPPED.value,
        NoxusRunStatus.AWAITING_HUMAN_FEEDBACK.value,
    }
)


@dataclass(eq=False)
class _Reader:
    """One trigger waiting for its run's next status."""

    run_id: str
    due_at: float
    interval: float
    answer: asyncio.Future[Mapping[str, Any]] = field(repr=False)


class StatusWatcher:
    """Status reads shared by the triggers that wait on runs of one workflow, on one connection.

    Use :meth:`StatusWatchers.join` to get one; :meth:`next_status` is a trigger's status read.

    :param settings: the connection.
    :param workflow_id: the workflow whose runs are listed.
    """

    def __init__(self, settings: NoxusConnectionSettings, workflow_id: str) -> None:
        self.settings = settings
        self.workflow_id = workflow_id
        #: Request counts, for benchmarks and logs: list pages and per-run reads.
        self.pages_read = 0
        self.runs_read = 0
        self._readers: dict[str, list[_Reader]] = {}
        self._answered_at: dict[str, float] = {}
        #: Where each run was last seen in the list, and how many runs the list held then. New runs
        #: are added at its top: a run seen at position p of t runs is now at p + (total now - t).
        self._position: dict[str, tuple[int, int]] = {}
        #: How many runs the list held at the last page read (0 while the server has not said).
        self._listed_total = 0
        #: Runs per page as the server last said (it may serve fewer than asked).
        self._page_size = PAGE_SIZE
        self._list_failures = 0
        self._list_usable = True
        #: No round before this loop time (after a round whose list read failed).
        self._not_before = -math.inf
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- the triggers' side ----------------------------------------------------------------

    async def next_status(self, run_id: str, interval: float) -> Mapping[str, Any]:
        """The run as next seen: at its turn (``interval`` seconds after its previous answer, the
        first at once) or as soon as it is seen final. Raises the error of a failed read."""
        loop = asyncio.get_running_loop()
        due_at = self._answered_at.get(run_id, -math.inf) + interval
        reader = _Reader(run_id, due_at, interval, loop.create_future())
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
        self._answered_at.pop(run_id, None)
        self._position.pop(run_id, None)

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
        """Return when some reader is due (after a short gathering pause)."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            due_at = min((reader.due_at for reader in self._all_readers()), default=None)
            if due_at is not None:
                due_at = max(due_at, self._not_before)
            if due_at is not None and due_at <= loop.time():
                await asyncio.sleep(GATHER_S)
                return
            timeout = None if due_at is None else due_at - loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _round(self, client: NoxusAsyncClient) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        readers = list(self._all_readers())
        if not readers:
            return
        window = min(reader.interval for reader in readers) / 2
        due = {reader.run_id for reader in readers if reader.due_at <= now + window}
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
                    self._not_before = now + 2 * window
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
                if run_id in unseen:
                    unseen.discard(run_id)
                    self._answer(run_id, run)
                elif run.get("status") in WAKING_STATUSES:
                    self._answer(run_id, run)
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
        at_once = asyncio.Semaphore(PER_RUN_READS_AT_ONCE)

        async def read(run_id: str) -> None:
            async with at_once:
                try:
                    run = await client.a_get_run_status(run_id, policy=SINGLE_ATTEMPT)
                except NoxusError as error:
                    self._fail(self._readers.get(run_id, ()), error)
                else:
                    self._answer(run_id, run)
                finally:
                    self.runs_read += 1

        await asyncio.gather(*(read(run_id) for run_id in run_ids))

    def _answer(self, run_id: str, run: Mapping[str, Any]) -> None:
        self._answered_at[run_id] = asyncio.get_running_loop().time()
        for reader in self._readers.get(run_id, ()):
            if not reader.answer.done():
                reader.answer.set_result(run)

    @staticmethod
    def _fail(readers: Iterable[_Reader], error: BaseException) -> None:
        for reader in list(readers):
            if not reader.answer.done():
                reader.answer.set_exception(error)

    def _all_readers(self) -> Iterable[_Reader]:
        readers = (reader for readers in self._readers.values() for reader in readers)
        return [reader for reader in readers if not reader.answer.done()]


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
