"""Start DAGs when Noxus runs end, wherever they were started: :class:`NoxusRunEventTrigger`.

An event trigger (Airflow 3 ``BaseEventTrigger``) for an ``AssetWatcher``: it yields one event per run of
a workflow that ends with one of the watched statuses after the watcher first started, whoever made
the run (the Noxus app, Noxus's own triggers, another system, Airflow).

Reading Noxus: one poll per workflow and connection, shared by the triggerer's watchers
(:mod:`airflow_provider_noxus.triggers.run_feed`), reads only the new head of the run list and the runs
still in flight.

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
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_VERSION, BaseEventTrigger, TriggerEvent

if not AIRFLOW_V_3_0_PLUS:
    raise ImportError(
        f"NoxusRunEventTrigger needs Airflow 3.0 or later (assets scheduled by an AssetWatcher); this is "
        f"Airflow {AIRFLOW_VERSION}. On Airflow 2 start the DAG from the task that starts the Noxus run, "
        "or upgrade Airflow."
    )

from airflow_provider_noxus.exceptions import NoxusError
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.run_events import ENDED, RunEventState, advance, baseline, event_payload
from airflow_provider_noxus.triggers.run_feed import RUN_FEEDS

#: Key of the watcher's state in its assets' state store.
STATE_KEY = "noxus_run_events"
#: Shortest and longest poll interval (seconds).
MIN_POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 86_400.0
#: Wait after an error that will not heal by itself (a refused key, an unknown workflow) before trying
#: again: a watcher has no task to fail, and the triggerer would restart it at once.
REFUSED_RETRY_S = 300.0


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
            RUN_FEEDS.use((client.settings, self.workflow_id)) as feed,
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


__all__ = ["STATE_KEY", "NoxusRunEventTrigger", "WatcherStateStore"]
