"""Start DAGs when Noxus runs end, wherever they were started: :class:`NoxusRunEventTrigger`.

An event trigger (Airflow 3 ``BaseEventTrigger``) for an ``AssetWatcher``: it yields one event per run of
a workflow that ends with one of the watched statuses after the watcher first started, whoever made
the run (the Noxus app, Noxus's own triggers, another system, Airflow).

Reading Noxus (:class:`RunFeed`): each poll reads the workflow's run list, newest first, only down to the
runs already known (the new head; bounded by :data:`MAX_PAGES_PER_POLL`), plus the runs still in flight
that the head does not hold, one by one. Watchers of one workflow and connection in one triggerer share
the poll, which comes once per their shortest poll interval. Requests go through the hook's async
client (total deadlines, backoff, ``Retry-After``, redirects kept to the origin, the key sent nowhere
else). Airflow 3.3's shared
streams are not used: their poll sees only the trigger's kwargs, and each watcher here needs the poll
to cover its own watermark and runs in flight, which come from its asset's state store.

What is kept where (:mod:`airflow_provider_noxus.run_events` says what is tracked):

- Airflow 3.3+: the state lives in the asset state store (key :data:`STATE_KEY`) of every asset the
  watcher feeds, written before the poll's events are yielded. A triggerer restarted, killed or replaced
  goes on from there: no run is repeated, and runs that ended while no triggerer ran the watcher make
  their events at its next poll. Airflow commits the state write and the event in separate transactions
  (the event when the runner next syncs, within about a second): a triggerer killed in that second
  loses that poll's events.
- Airflow 3.0-3.2 (no state store): the state lives in memory; after a restart the watcher starts
  afresh, so runs that ended while it was down make no event. Nothing is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_VERSION, BaseEventTrigger, TriggerEvent

if not AIRFLOW_V_3_0_PLUS:
    raise ImportError(
        f"NoxusRunEventTrigger needs Airflow 3.0 or later (assets scheduled by an AssetWatcher); this is "
        f"Airflow {AIRFLOW_VERSION}. On Airflow 2 start the DAG from the task that starts the Noxus run, "
        "or upgrade Airflow."
    )

from airflow_provider_noxus._loop_shared import LoopShared
from airflow_provider_noxus.connection import NoxusConnectionSettings
from airflow_provider_noxus.exceptions import NoxusError, NoxusNotFoundError
from airflow_provider_noxus.hooks.noxus import NoxusAsyncClient, NoxusHook, open_async_client
from airflow_provider_noxus.run_events import (
    ENDED,
    Observation,
    RunEventState,
    advance,
    baseline,
    event_payload,
)
from airflow_provider_noxus.run_list import parse_run_page
from airflow_provider_noxus.wait import is_transient

log = logging.getLogger(__name__)

#: Key of the watcher's state in its assets' state store.
STATE_KEY = "noxus_run_events"
#: Runs asked for per list page (the API's maximum).
PAGE_SIZE = 100
#: List pages one poll reads at most (the first poll of a new watcher reads the whole list, up to this).
MAX_PAGES_PER_POLL = 200
#: Runs in flight read one by one at once.
READS_AT_ONCE = 10
#: Shortest and longest poll interval (seconds).
MIN_POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 86_400.0
#: How long the first poll waits for sibling watchers to join.
GATHER_S = 0.05
#: Wait after an error that will not heal by itself (a refused key, an unknown workflow) before trying
#: again: a watcher has no task to fail, and the triggerer would restart it at once.
REFUSED_RETRY_S = 300.0


@dataclass(eq=False)
class _Ask:
    state: RunEventState | None
    interval: float
    answer: asyncio.Future[Observation] = field(repr=False)


class RunFeed:
    """One poll of a workflow's runs, shared by the watchers of one (event loop, connection, workflow).
    Made by :meth:`RunFeeds.join`; :meth:`observe` is a watcher's read.

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
        self._task: asyncio.Task[None] | None = None

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

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"noxus-run-feed-{self.workflow_id}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
        head = await self._read_head(client, [ask.state for ask in asks])
        listed = {str(run["id"]) for run in head}
        in_flight = (run_id for ask in asks if ask.state is not None for run_id in ask.state.in_flight)
        wanted = sorted(set(in_flight) - listed)
        reads: dict[str, Mapping[str, Any]] = {}
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

        await asyncio.gather(*(read(run_id) for run_id in wanted))
        return Observation(head=tuple(head), reads=reads, gone=frozenset(gone))

    async def _read_head(
        self, client: NoxusAsyncClient, states: Sequence[RunEventState | None]
    ) -> list[Mapping[str, Any]]:
        """The list from page 1 until it reaches the runs every watcher knows (:meth:`RunEventState.
        knows_head`), the list ends or the page budget is spent; each run once (new runs push the list
        down between pages: a run may show twice)."""
        head: dict[str, Mapping[str, Any]] = {}
        for page in range(1, MAX_PAGES_PER_POLL + 1):
            envelope = await client.a_list_runs(self.workflow_id, page=page, size=PAGE_SIZE)
            self.pages_read += 1
            listed = parse_run_page(envelope, workflow_id=self.workflow_id, page=page, size=PAGE_SIZE)
            for run in listed.items:
                head.setdefault(str(run["id"]), run)
            runs = list(head.values())
            if listed.last or all(state is not None and state.knows_head(runs) for state in states):
                break
        else:
            log.warning(
                "Noxus workflow %s: %d pages read in one poll without reaching the runs already known; "
                "runs listed deeper are not watched.",
                self.workflow_id,
                MAX_PAGES_PER_POLL,
            )
        return list(head.values())


def _started_feed(key: tuple[NoxusConnectionSettings, str]) -> RunFeed:
    feed = RunFeed(*key)
    feed.start()
    return feed


class RunFeeds:
    """The run feeds of this process, one per (event loop, connection, workflow)."""

    _feeds: LoopShared[tuple[NoxusConnectionSettings, str], RunFeed] = LoopShared(
        _started_feed, RunFeed.close
    )

    @classmethod
    def join(
        cls, settings: NoxusConnectionSettings, workflow_id: str
    ) -> contextlib.AbstractAsyncContextManager[RunFeed]:
        """The feed of ``workflow_id``, made by its first watcher and ended by its last."""
        return cls._feeds.use((settings, workflow_id))

    @classmethod
    def active(cls) -> list[RunFeed]:
        """The feeds of the running event loop."""
        return list(cls._feeds.values().values())


class WatcherStateStore:
    """The watcher's state in the asset state store of each asset it feeds (Airflow 3.3+), or nowhere.

    :param accessors: the trigger's ``asset_state_store`` (None before Airflow 3.3 or outside a triggerer).
    """

    def __init__(self, accessors: Any) -> None:
        self._accessors = self._split(accessors)

    @property
    def durable(self) -> bool:
        return bool(self._accessors)

    @staticmethod
    def _split(accessors: Any) -> list[Any]:
        if accessors is None:
            return []
        # One accessor per watched asset. Airflow gives a trigger all of them in one object whose
        # unsubscripted methods serve a single asset only; the same watcher may feed several assets.
        per_asset = [
            *getattr(accessors, "_by_name", {}).values(),
            *getattr(accessors, "_by_uri", {}).values(),
        ]
        return per_asset or [accessors]

    async def load(self, workflow_id: str, statuses: Sequence[str]) -> RunEventState | None:
        """The stored state of this watcher (the most advanced, when its assets disagree), or None."""
        states = [
            RunEventState.from_json(await accessor.aget(STATE_KEY), workflow_id, statuses)
            for accessor in self._accessors
        ]
        found = [state for state in states if state is not None]
        return max(found, key=lambda state: -math.inf if state.mark is None else state.mark, default=None)

    async def save(self, value: Mapping[str, Any]) -> None:
        for accessor in self._accessors:
            await accessor.aset(STATE_KEY, dict(value))


class NoxusRunEventTrigger(BaseEventTrigger):  # type: ignore[misc,valid-type]
    """Fire one asset event per run of ``workflow_id`` that ends with one of ``statuses``.

    Use it in an ``AssetWatcher`` of an asset (e.g. ``noxus://<host>/workflows/<id>``); a DAG scheduled on
    the asset reads each run from ``triggering_asset_events[asset][i].extra["payload"]``: ``run_id``,
    ``workflow_id``, ``status``, ``finished_at`` (ISO 8601, UTC) and ``run_url``. The output is not in
    the event: read it with ``NoxusHook(noxus_conn_id).get_run(workflow_id, run_id)``.

    :param workflow_id: the workflow whose runs are watched.
    :param statuses: end statuses that make an event: any of ``completed``, ``failed``, ``stopped``.
    :param noxus_conn_id: the Noxus connection.
    :param poll_interval: seconds between two reads of the workflow's runs.
    """

    def __init__(
        self,
        workflow_id: str,
        statuses: Sequence[str] = ("completed",),
        noxus_conn_id: str = "noxus_default",
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()
        if not isinstance(workflow_id, str) or not workflow_id.strip():
            raise ValueError("NoxusRunEventTrigger needs the workflow_id of the Noxus workflow to watch.")
        if isinstance(statuses, str):
            statuses = (statuses,)
        unknown = sorted(set(statuses) - ENDED)
        if unknown or not statuses:
            raise ValueError(
                f"NoxusRunEventTrigger on workflow {workflow_id}: statuses must be end statuses among "
                f"{sorted(ENDED)}, not {unknown or 'none'}."
            )
        numeric = isinstance(poll_interval, (int, float)) and not isinstance(poll_interval, bool)
        if not numeric or not MIN_POLL_INTERVAL <= poll_interval <= MAX_POLL_INTERVAL:
            raise ValueError(
                f"NoxusRunEventTrigger on workflow {workflow_id}: poll_interval must be "
                f"{MIN_POLL_INTERVAL} to {MAX_POLL_INTERVAL:.0f} seconds, not {poll_interval!r}."
            )
        self.workflow_id = workflow_id
        self.statuses = tuple(sorted(set(statuses)))
        self.noxus_conn_id = noxus_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "workflow_id": self.workflow_id,
                "statuses": list(self.statuses),
                "noxus_conn_id": self.noxus_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        store = WatcherStateStore(getattr(self, "asset_state_store", None))
        state = await store.load(self.workflow_id, self.statuses)
        self._log_start(state, store.durable)
        stored = None if state is None else state.to_json()
        async with (
            NoxusHook(self.noxus_conn_id).async_client() as client,
            RunFeeds.join(client.settings, self.workflow_id) as feed,
        ):
            while True:
                try:
                    observation = await feed.observe(state, self.poll_interval)
                except NoxusError as error:
                    self.log.error(
                        "Watching the runs of Noxus workflow %s failed: %s. Trying again in %.0f s.",
                        self.workflow_id,
                        error,
                        REFUSED_RETRY_S,
                    )
                    await asyncio.sleep(REFUSED_RETRY_S)
                    continue
                if state is None:
                    state, ended = baseline(observation, self.workflow_id, self.statuses), []
                    self.log.info(
                        "Watching Noxus workflow %s from now: %d runs in flight; ended runs are history.",
                        self.workflow_id,
                        len(state.in_flight),
                    )
                else:
                    ended = advance(state, observation)
                current = state.to_json()
                if current != stored:
                    # Stored before the events leave: a restart never repeats them.
                    await store.save(current)
                    stored = current
                for run in ended:
                    run_url = client.run_url(self.workflow_id, str(run["id"]))
                    yield TriggerEvent(event_payload(run, self.workflow_id, run_url))

    def _log_start(self, state: RunEventState | None, durable: bool) -> None:
        if state is not None:
            self.log.info(
                "Watching Noxus workflow %s again from its stored state: %d runs in flight.",
                self.workflow_id,
                len(state.in_flight),
            )
        elif not durable:
            self.log.warning(
                "No asset state store (Airflow before 3.3): the watcher of Noxus workflow %s keeps its "
                "place in memory; runs that end while no triggerer runs it make no event.",
                self.workflow_id,
            )


__all__ = ["STATE_KEY", "NoxusRunEventTrigger", "RunFeed", "RunFeeds", "WatcherStateStore"]
