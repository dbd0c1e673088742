"""Call a hook's API the sync way or the async way, each call bounded in time; record retry waits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from airflow_provider_noxus.hooks.noxus import NoxusHook

T = TypeVar("T")

#: Longest one call of a test may take: past it the test fails instead of hanging.
CALL_LIMIT_S = 60.0


class SleepRecorder:
    """Stands in for ``time.sleep`` and ``asyncio.sleep``: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def within(limit: float, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` run in a worker thread; fails the test past ``limit`` seconds."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="noxus-test-call")
    try:
        future = pool.submit(function, *args, **kwargs)
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            name = getattr(function, "__name__", repr(function))
            raise AssertionError(f"{name} did not return within {limit:g} s") from None
    finally:
        pool.shutdown(wait=False)


class HookFactory:
    """Makes hooks on connections set in the environment, their retry waits recorded; closes them.

    :param monkeypatch: sets the ``AIRFLOW_CONN_*`` variables (undone after the test).
    :param sleeps: records the hooks' retry waits.
    :param prefix: start of the connection ids.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder, prefix: str) -> None:
        self.monkeypatch = monkeypatch
        self.sleeps = sleeps
        self.prefix = prefix
        self.hooks: list[NoxusHook] = []

    def make(self, host: str, key: str, policy: Any, extra: dict[str, Any]) -> NoxusHook:
        """A hook on a new connection to ``host`` with ``key`` and those extras."""
        conn_id = f"{self.prefix}_{len(self.hooks)}"
        connection = {"conn_type": "noxus", "host": host, "password": key, "extra": extra}
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        hook = NoxusHook(conn_id, retry_policy=policy, sleep=self.sleeps, async_sleep=self.sleeps.asleep)
        self.hooks.append(hook)
        return hook

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()


class ApiCaller:
    """Calls a hook method the sync way (``hook.name``) or the async way (``client.a_name``).

    Lets one test cover both paths where the behaviour must be the same. A call that takes longer
    than ``limit`` seconds fails the test (a sync call is run in a worker thread to be bounded).
    """

    def __init__(self, mode: str, hook: NoxusHook, *, limit: float = CALL_LIMIT_S) -> None:
        self.mode = mode
        self.hook = hook
        self.limit = limit

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return within(self.limit, getattr(self.hook, name), *args, **kwargs)

        async def call() -> Any:
            async with self.hook.async_client() as client:
                return await getattr(client, f"a_{name}")(*args, **kwargs)

        async def bounded() -> Any:
            try:
                return await asyncio.wait_for(call(), self.limit)
            except asyncio.TimeoutError:
                raise AssertionError(f"a_{name} did not return within {self.limit:g} s") from None

        return asyncio.run(bounded())


# Fixtures, imported by the conftest files that use them.


@pytest.fixture(params=["sync", "async"])
def call_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api_for(call_mode: str) -> Callable[[NoxusHook], ApiCaller]:
    """``api_for(hook)``: a caller of that hook's methods, sync or async (the test runs twice)."""
    return lambda hook: ApiCaller(call_mode, hook)
