"""Shared status checks in the triggerer: one request for up to 100 waiting runs of a workflow.

Triggers of one process that poll runs of the same connection and workflow share a
:class:`StatusWatcher`. Its rounds come once per the shortest poll interval of its triggers; each round
checks the runs due (each is checked once per its trigger's poll interval) by reading the workflow's
run list, newest first, 100 runs a page, as far as the round's walk allows (bounded by the runs it still
needs, see :mod:`~airflow_provider_noxus.triggers.watch_round`); the due runs it did not see get their
own ``GET /v1/runs/{id}``, as does the run of a watcher that waits on one run only (one request either
way, without a page of the workflow's history to parse). Whatever order the server lists in, every due
run is checked each round: the walk bounds the list reads, the per-run reads cover the rest. A fan-out's
runs are among the workflow's newest, so a round usually costs one request per 100 waiting runs.

A trigger is woken only when its run changes (its status, or the nodes running and done), including any
run seen in a page before its turn: a trigger whose run goes on unchanged costs nothing but its share of
a page. The watcher is created with its first trigger and ends with its last; a cancelled trigger leaves
it at once.

The list is believed only as far as :func:`~airflow_provider_noxus.run_list.parse_run_page` allows, and
an item without a status is not taken for its run. A list read that fails delays that round's unseen
runs to the next round; after three such rounds in a row, or at once when the list is refused (401, 403
or another 4xx), the runs are read one by one, each failing only on its own read, and the list is tried
again within four poll intervals. A 429 (on any read) pauses the whole watcher for its ``Retry-After``.
A server value that cannot be read fails the read of the run it concerns, not the round.

(Over 400 lines: the watcher, the seat a trigger takes in it and the registry of watchers are one
concept; the round's decisions are in :mod:`~airflow_provider_noxus.triggers.watch_round`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_noxus._loop_shared import LoopShared, LoopWorker
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import NoxusError, NoxusProtocolError, NoxusRateLimitedError
from airflow_provider_noxus.hooks.noxus import SINGLE_ATTEMPT, NoxusAsyncClient, open_async_client
from airflow_provider_noxus.run_list import parse_run_page
from airflow_provider_noxus.triggers.watch_round import (
    PAGE_SIZE,
    AfterListFailure,
    ListHealth,
    PageWalk,
    Step,
    page_budget,
)
from airflow_provider_noxus.wait import run_signature

log = logging.getLogger(__name__)

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


class StatusWatcher(LoopWorker):
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
        #: What the list answered lately: whether rounds read it, when the watcher may send at all.
        self._health = ListHealth()
        #: The last round's tick (the shortest poll interval of its triggers).
        self._tick = GATHER_S
        #: When the next round starts (loop time); None while no trigger waits.
        self._next_round: float | None = None
        self._changed = asyncio.Event()
        self.task_name = f"noxus-status-watcher-{workflow_id}"

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
            # Not before a 429's pause is over, whoever joins meanwhile.
            at = None if self._next_round is None else self._health.round_at(self._next_round)
            if at is not None and at <= loop.time():
                return
            # A timer, not wait_for: wait_for would make a task per round of every watcher.
            timer = None if at is None else loop.call_at(at, self._changed.set)
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
        self._tick = tick
        try:
            await self._check(client, due, tick)
        finally:
            self.rounds += 1

    async def _check(self, client: NoxusAsyncClient, due: set[str], tick: float) -> None:
        """Check the ``due`` runs: from the list pages as far as the round's walk goes (see
        :class:`~airflow_provider_noxus.triggers.watch_round.PageWalk`), the rest one by one."""
        now = asyncio.get_running_loop().time()
        if len(self._readers) == 1 or not self._health.reads_list(now):
            # The only run waited on: its own read is one request too, without a page of other runs
            # (the workflow's history) to parse. Or the list failed lately: it is tried again later.
            await self._read_one_by_one(client, due)
            return
        unseen = set(due)
        try:
            await self._read_list(client, unseen)
        except NoxusError as error:
            now = asyncio.get_running_loop().time()
            after = self._health.list_failed(error, now, tick)
            if after is AfterListFailure.WAIT:
                log.warning(
                    "Reading the run list of Noxus workflow %s failed (%s); the runs not seen wait for "
                    "the next round.",
                    self.workflow_id,
                    error,
                )
                return
            log.warning(
                "The run list of Noxus workflow %s cannot be read (%s); reading runs one by one, the list "
                "again in %.1f s.",
                self.workflow_id,
                error,
                self._health.list_again_at - now,
            )
        if unseen:
            await self._read_one_by_one(client, unseen)

    async def _read_list(self, client: NoxusAsyncClient, unseen: set[str]) -> None:
        """Read list pages as the round's :class:`PageWalk` says; answer the runs seen, leave in
        ``unseen`` the due runs that were not."""
        due = list(unseen)
        before: set[str] = set()  # the ids of the page before
        walk: PageWalk | None = None
        number = 1
        while True:
            envelope = await client.a_list_runs(
                self.workflow_id, page=number, size=PAGE_SIZE, policy=SINGLE_ATTEMPT
            )
            self.pages_read += 1
            page = parse_run_page(envelope, workflow_id=self.workflow_id, page=number, size=PAGE_SIZE)
            self._health.list_read()
            self._page_size = page.size
            if page.total is not None:
                self._listed_total = page.total
            for index, run in enumerate(page.items):
                run_id = run["id"]
                if run_id in self._readers and self._seen_in_list(
                    run_id, run, (number - 1) * page.size + index
                ):
                    unseen.discard(run_id)
            # Most of the page was on the page before (new runs push only a few from one to the next): its
            # middle run was.
            repeats = bool(page.items) and page.items[len(page.items) // 2]["id"] in before
            if walk is None:
                # The first page tells how many runs were created since the last round: those waited on
                # moved down the list by as many.
                budget = page_budget((self._now_at(run_id) for run_id in due), self._page_size)
                walk = PageWalk(budget=budget, needed=len(unseen), first_total=page.total)
            if walk.after(page, len(unseen), repeats=repeats) is not Step.NEXT_PAGE:
                if unseen:
                    log.debug("%d runs of workflow %s not in the pages read", len(unseen), self.workflow_id)
                return
            before = {run["id"] for run in page.items}
            number = walk.pages_read

    def _seen_in_list(self, run_id: str, run: Mapping[str, Any], position: int) -> bool:
        """``run`` is at ``position`` of the list: whether it counts as seen (an item without a status
        does not: the run is read on its own)."""
        status = run.get("status")
        if not isinstance(status, str) or not status:
            return False
        self._position[run_id] = (position, self._listed_total)
        try:
            self._seen(run_id, run)
        except Exception:  # a value of this item only: the run's own read tells
            log.warning("Noxus run %s: its item in the run list could not be read", run_id, exc_info=True)
            return False
        return True

    def _now_at(self, run_id: str) -> int | None:
        """Where ``run_id`` is in the list now, as far as the last page read tells: where it was seen,
        moved down by the runs created since (None: never seen there)."""
        seen = self._position.get(run_id)
        if seen is None:
            return None
        position, total_then = seen
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
        """Read ``run_id``; its triggers get the run if it changed, or the error. A 429 pauses the
        watcher instead (the run waits for the next round), and no read starts while it is paused."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._health.quiet_until:
            return
        try:
            run = self._own_run(run_id, await client.a_get_run_status(run_id, policy=SINGLE_ATTEMPT))
        except NoxusRateLimitedError as error:
            self._health.rate_limited(error, loop.time(), self._tick)
            log.warning(
                "Noxus answered 429 to a run read (%s); the status checks of workflow %s pause.",
                error,
                self.workflow_id,
            )
            return
        except NoxusError as error:
            self._fail(self._readers.get(run_id, ()), error)
            return
        finally:
            self.runs_read += 1
        self._health.run_read()
        try:
            self._seen(run_id, run)
        except Exception as error:  # a value of this answer: its run's failure only
            failure = NoxusProtocolError(
                f"The Noxus API answered a status read with a run that cannot be read ({error!r}).",
                run_id=run_id,
                workflow_id=self.workflow_id,
            )
            self._fail(self._readers.get(run_id, ()), failure)

    def _own_run(self, run_id: str, answer: Any) -> Mapping[str, Any]:
        """``answer`` to the read of ``run_id``, if it is that run."""
        if not isinstance(answer, Mapping) or answer.get("id") not in (None, run_id):
            raise NoxusProtocolError(
                "The Noxus API answered a status read with something that is not the run asked for.",
                run_id=run_id,
                workflow_id=self.workflow_id,
            )
        return answer

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
