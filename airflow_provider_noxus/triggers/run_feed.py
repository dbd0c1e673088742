"""The shared poll of a workflow's runs for the event triggers of one triggerer: :class:`RunFeed`.

Each poll reads the workflow's run list, newest first, only down to the runs its watchers already know
(the new head; :meth:`~airflow_provider_noxus.run_events.RunEventState.knows_head`, bounded by
:data:`MAX_PAGES_PER_POLL`), plus the watchers' runs still in flight that the head does not hold: from
the pages below where they were last seen when that costs fewer requests, else one by one. Watchers of
one workflow and connection share the feed, which polls once per their shortest poll interval; it is
made by the first and ended by the last (cancellation included). Requests go through the hook's async
client: total deadlines, backoff, ``Retry-After``, redirects kept to the origin.

Airflow 3.3's shared streams are not used: their poll sees only one trigger's kwargs, and each watcher
here needs the poll to cover its own watermark and runs in flight, which come from its asset's state
store.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_noxus._loop_shared import LoopShared, LoopWorker
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import NoxusError, NoxusNotFoundError
from airflow_provider_noxus.hooks.noxus import NoxusAsyncClient, open_async_client
from airflow_provider_noxus.run_events import ENDED, Observation, RunEventState
from airflow_provider_noxus.run_list import RunPage, parse_run_page
from airflow_provider_noxus.wait import is_transient

log = logging.getLogger(__name__)

#: Runs asked for per list page (the API's maximum).
PAGE_SIZE = 100
#: List pages one poll reads at most (the first poll of a new watcher reads the whole list, up to this).
MAX_PAGES_PER_POLL = 200
#: Pages read below where a run in flight is thought to be (runs created meanwhile push it down).
PAGE_MARGIN = 1
#: Runs in flight read one by one at once.
READS_AT_ONCE = 10
#: How long the first poll waits for sibling watchers to join.
GATHER_S = 0.05


@dataclass(eq=False)
class _Ask:
    state: RunEventState | None
    interval: float
    answer: asyncio.Future[Observation] = field(repr=False)


class RunFeed(LoopWorker):
    """One poll of a workflow's runs, shared by the watchers of one (event loop, connection, workflow).
    Made by :data:`RUN_FEEDS`; :meth:`observe` is a watcher's read.

    :param settings: the connection.
    :param workflow_id: the workflow.
    """

    def __init__(self, settings: NoxusConnectionSettings, workflow_id: str) -> None:
        self.settings = settings
        self.workflow_id = workflow_id
        #: Counts, for benchmarks and tests.
        self.polls = 0
        self.pages_read = 0
        self.runs_read = 0
        self._asks: list[_Ask] = []
        self._asked = asyncio.Event()
        #: Where runs in flight were last seen in the list, and how many runs it held then; the list's
        #: length and page size as last read.
        self._position: dict[str, tuple[int, int]] = {}
        self._listed_total = 0
        self._page_size = PAGE_SIZE
        self.task_name = f"noxus-run-feed-{workflow_id}"

    async def observe(self, state: RunEventState | None, interval: float) -> Observation:
        """The next poll's reading for a watcher at ``state`` (None: starting, the whole list): the head
        of the list down to the runs it knows, and its runs in flight that the head does not hold.
        Polls come once per the shortest ``interval`` of the watchers waiting. Raises a
        :class:`NoxusError` that waiting will not heal."""
        ask = _Ask(state, interval, asyncio.get_running_loop().create_future())
        self._asks.append(ask)
        self._asked.set()
        try:
            return await ask.answer
        finally:
            with contextlib.suppress(ValueError):
                self._asks.remove(ask)


    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        async with open_async_client(self.settings) as client:
            last_start: float | None = None
            while True:
                asks = await self._until_due(last_start)
                last_start = loop.time()
                try:
                    observation = await self._poll(client, asks)
                except NoxusError as error:
                    if is_transient(error):
                        log.warning(
                            "Polling the runs of Noxus workflow %s failed (%s); trying again next poll.",
                            self.workflow_id,
                            error,
                        )
                        continue
                    self._answer(asks, error)
                except Exception as error:  # a bug here must not leave the watchers waiting forever
                    log.exception("Polling the runs of Noxus workflow %s failed", self.workflow_id)
                    self._answer(asks, NoxusError(f"The Noxus run feed failed: {error!r}"))
                else:
                    self._answer(asks, observation)
                finally:
                    self.polls += 1

    async def _until_due(self, last_start: float | None) -> list[_Ask]:
        """Wait for the next poll: the shortest poll interval of the waiting watchers after the last
        one started (the first one shortly after the first watcher asks); the asks it answers."""
        loop = asyncio.get_running_loop()
        first_due: float | None = None
        while True:
            self._asked.clear()
            asks = [ask for ask in self._asks if not ask.answer.done()]
            timer = None
            if asks:
                if last_start is None:
                    first_due = first_due or loop.time() + GATHER_S
                    due = first_due
                else:
                    due = last_start + min(ask.interval for ask in asks)
                if due <= loop.time():
                    return asks
                # A timer, not wait_for: wait_for would make a task per poll.
                timer = loop.call_at(due, self._asked.set)
            try:
                await self._asked.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    @staticmethod
    def _answer(asks: Sequence[_Ask], answer: Observation | BaseException) -> None:
        for ask in asks:
            if ask.answer.done():
                continue
            if isinstance(answer, BaseException):
                ask.answer.set_exception(answer)
            else:
                ask.answer.set_result(answer)

    async def _poll(self, client: NoxusAsyncClient, asks: Sequence[_Ask]) -> Observation:
        in_flight = {run_id for ask in asks if ask.state is not None for run_id in ask.state.in_flight}
        self._position = {run_id: at for run_id, at in self._position.items() if run_id in in_flight}
        head, head_pages = await self._read_head(client, [ask.state for ask in asks])
        wanted = in_flight - {str(run["id"]) for run in head}
        reads: dict[str, Mapping[str, Any]] = {}
        for page in range(head_pages + 1, self._pages_worth_reading(head_pages, wanted) + 1):
            listed = await self._read_page(client, page)
            reads.update((run_id, run) for run in listed.items if (run_id := str(run["id"])) in wanted)
            if listed.last:
                break
        gone: set[str] = set()
        at_once = asyncio.Semaphore(READS_AT_ONCE)

        async def read(run_id: str) -> None:
            async with at_once:
                try:
                    run = await client.a_get_run_status(run_id)
                except NoxusNotFoundError:
                    gone.add(run_id)
                    return
                except NoxusError as error:
                    if not is_transient(error):
                        raise
                    log.warning(
                        "Reading Noxus run %s failed (%s); it is read again next poll.", run_id, error
                    )
                    return
                finally:
                    self.runs_read += 1
                if (
                    not isinstance(run, Mapping)
                    or run.get("id") != run_id
                    or run.get("workflow_id")
                    not in (
                        None,
                        self.workflow_id,
                    )
                ):
                    log.warning("Noxus answered run %s with another object; it is ignored.", run_id)
                    return
                reads[run_id] = run

        await asyncio.gather(*(read(run_id) for run_id in sorted(wanted - set(reads))))
        return Observation(head=tuple(head), reads=reads, gone=frozenset(gone))

    async def _read_page(self, client: NoxusAsyncClient, page: int) -> RunPage:
        """One list page; where its runs in flight stand is noted (see :meth:`_pages_worth_reading`)."""
        envelope = await client.a_list_runs(self.workflow_id, page=page, size=PAGE_SIZE)
        self.pages_read += 1
        listed = parse_run_page(envelope, workflow_id=self.workflow_id, page=page, size=PAGE_SIZE)
        if listed.total is not None:
            self._listed_total, self._page_size = listed.total, listed.size
            for index, run in enumerate(listed.items):
                if run.get("status") not in ENDED:
                    self._position[str(run["id"])] = ((listed.page - 1) * listed.size + index, listed.total)
        return listed

    async def _read_head(
        self, client: NoxusAsyncClient, states: Sequence[RunEventState | None]
    ) -> tuple[list[Mapping[str, Any]], int]:
        """The list from page 1 until it reaches the runs every watcher knows (:meth:`RunEventState.
        knows_head`), the list ends or the page budget is spent, and the pages read; each run once (new
        runs push the list down between pages: a run may show twice)."""
        head: dict[str, Mapping[str, Any]] = {}
        for page in range(1, MAX_PAGES_PER_POLL + 1):
            listed = await self._read_page(client, page)
            for run in listed.items:
                head.setdefault(str(run["id"]), run)
            runs = list(head.values())
            if listed.last or all(state is not None and state.knows_head(runs) for state in states):
                return runs, page
        log.warning(
            "Noxus workflow %s: %d pages read in one poll without reaching the runs already known; "
            "runs listed deeper are not watched.",
            self.workflow_id,
            MAX_PAGES_PER_POLL,
        )
        return list(head.values()), MAX_PAGES_PER_POLL

    def _page_now(self, position: int, total_then: int) -> int:
        """The page a run seen at ``position`` when the list held ``total_then`` runs is on now."""
        return (position + max(0, self._listed_total - total_then)) // self._page_size + 1

    def _pages_worth_reading(self, head_pages: int, wanted: set[str]) -> int:
        """How deep to read the list for the ``wanted`` runs below the head: where a run was last seen,
        moved down by the runs created since, tells its page now; reading down to a depth costs its pages,
        and each wanted run deeper (or never seen in a page) costs a read of its own. The cheapest depth."""
        pages = sorted(
            self._page_now(*self._position[run_id]) for run_id in wanted if run_id in self._position
        )
        best, best_cost = head_pages, len(pages)
        for index, page in enumerate(pages):
            depth = min(page + PAGE_MARGIN, MAX_PAGES_PER_POLL)
            cost = depth - head_pages + len(pages) - bisect.bisect_right(pages, depth, lo=index)
            if depth > head_pages and cost < best_cost:
                best, best_cost = depth, cost
        return best


def _started_feed(key: tuple[NoxusConnectionSettings, str]) -> RunFeed:
    feed = RunFeed(*key)
    feed.start()
    return feed


#: The run feeds of this process, one per (event loop, connection, workflow):
#: ``async with RUN_FEEDS.use((settings, workflow_id)) as feed``, made by its first watcher and ended
#: by its last.
RUN_FEEDS: LoopShared[tuple[NoxusConnectionSettings, str], RunFeed] = LoopShared(_started_feed, RunFeed.close)


def active_feeds() -> list[RunFeed]:
    """The feeds of the running event loop (for tests and benchmarks)."""
    return list(RUN_FEEDS.values().values())


__all__ = ["MAX_PAGES_PER_POLL", "PAGE_SIZE", "RUN_FEEDS", "RunFeed", "active_feeds"]
