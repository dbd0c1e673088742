"""What the hostile-server tests share besides fixtures: the key, a short retry policy, a run body, and
bounded ways to get a trigger's event or a stream's first events."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy, RunEvent
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger
from support.noxus_calls import within
from support.noxus_tasks import first_event

#: The key every test connection holds; a test that finds it where it must not be fails.
KEY = "nxk-HOSTILE-5e1f0c2a9b7d"
#: Retries short and recorded, so that a test proves what was sent, not how long it took.
FAST_POLICY = RetryPolicy(max_attempts=3, backoff_initial=0.2, backoff_max=1.0, total_budget=30.0)


def run_body(status: str = "completed", run_id: str = "run-1") -> dict[str, Any]:
    """A run as the API answers it."""
    return {"id": run_id, "workflow_id": "wf-1", "status": status, "output": {"text": "done"}}


def trigger_event(hook: NoxusHook, *, limit: float = 30.0, **kwargs: Any) -> dict[str, Any]:
    """The one event of a :class:`NoxusRunTrigger` on ``hook``'s connection, within ``limit`` seconds.

    ``kwargs`` go to the trigger (``run_id``, ``wait_strategy``, ``deadline``...); defaults: run
    ``run-1`` of workflow ``wf-1``, polled every 0.2 s.
    """
    options: dict[str, Any] = {"workflow_id": "wf-1", "run_id": "run-1", "poll_interval": 0.2}
    trigger = NoxusRunTrigger(noxus_conn_id=hook.noxus_conn_id, **{**options, **kwargs})
    return asyncio.run(asyncio.wait_for(first_event(trigger), limit))


def first_stream_events(hook: NoxusHook, mode: str, count: int, limit: float = 3.0) -> list[RunEvent]:
    """The first ``count`` events of run-1's stream, or fewer if the stream ends; within ``limit``."""
    if mode == "sync":

        def read() -> list[RunEvent]:
            events: list[RunEvent] = []
            for event in hook.iter_run_events("run-1"):
                events.append(event)
                if len(events) == count:
                    break
            return events

        return within(limit, read)

    async def follow() -> list[RunEvent]:
        events: list[RunEvent] = []
        async with hook.async_client() as client:
            async for event in client.a_iter_run_events("run-1"):
                events.append(event)
                if len(events) == count:
                    break
        return events

    return asyncio.run(asyncio.wait_for(follow(), limit))
