"""Triggers waiting through the shared status watcher for as long as a test needs them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from airflow_provider_noxus._compat import BaseTrigger
from airflow_provider_noxus.triggers.status_watcher import StatusWatchers
from support.noxus_tasks import first_event


@asynccontextmanager
async def waiting(triggers: Iterable[BaseTrigger]) -> AsyncIterator[list[asyncio.Future[dict[str, Any]]]]:
    """Each trigger run to its first event in a task (the tasks yielded, in order); the tasks still
    running are cancelled on exit, after which no watcher may be left."""
    waits = [asyncio.ensure_future(first_event(trigger)) for trigger in triggers]
    try:
        yield waits
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    assert StatusWatchers.active() == []
