"""Call a hook's API the sync way or the async way, each call bounded in time; record retry waits."""

from __future__ import annotations

import asyncio
import concurrent.futures
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
