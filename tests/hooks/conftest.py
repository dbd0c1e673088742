"""Fixtures of the hook tests: hooks on the emulator whose waits are recorded, not slept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy

#: Small backoffs so that bounds are easy to assert; the waits are recorded, never slept.
TEST_POLICY = RetryPolicy(max_attempts=4, backoff_initial=0.5, backoff_max=5.0, total_budget=60.0)


class SleepRecorder:
    """Stands in for ``time.sleep`` and ``asyncio.sleep``: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_hook(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder
) -> Iterator[Callable[..., NoxusHook]]:
    """``make_hook(**extras)``: a hook on a connection to the emulator with those extras.

    Keyword ``api_key`` replaces the key, ``host`` the base URL, ``policy`` the retry policy.
    """
    hooks: list[NoxusHook] = []

    def make(
        *,
        api_key: str | None = None,
        host: str | None = None,
        policy: RetryPolicy = TEST_POLICY,
        **extra: Any,
    ) -> NoxusHook:
        conn_id = f"noxus_test_{len(hooks)}"
        connection = {
            "conn_type": "noxus",
            "host": noxus_emulator.url if host is None else host,
            "password": noxus_emulator.api_key if api_key is None else api_key,
            "extra": extra,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        hook = NoxusHook(conn_id, retry_policy=policy, sleep=sleeps, async_sleep=sleeps.asleep)
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def hook(make_hook: Callable[..., NoxusHook]) -> NoxusHook:
    return make_hook()


class ApiCaller:
    """Calls a hook method the sync way (``hook.name``) or the async way (``client.a_name``).

    Lets one test cover both paths where the behaviour must be the same.
    """

    def __init__(self, mode: str, hook: NoxusHook) -> None:
        self.mode = mode
        self.hook = hook

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(self.hook, name)(*args, **kwargs)

        async def call() -> Any:
            async with self.hook.async_client() as client:
                return await getattr(client, f"a_{name}")(*args, **kwargs)

        return asyncio.run(call())


@pytest.fixture(params=["sync", "async"])
def call_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api_for(call_mode: str) -> Callable[[NoxusHook], ApiCaller]:
    """``api_for(hook)``: a caller of that hook's methods, sync or async (the test runs twice)."""
    return lambda hook: ApiCaller(call_mode, hook)


@pytest.fixture
def api(api_for: Callable[[NoxusHook], ApiCaller], hook: NoxusHook) -> ApiCaller:
    return api_for(hook)


@pytest.fixture
def answered(noxus_emulator: Any) -> Callable[[str], dict[str, int]]:
    """``answered("get_run")`` -> ``{"200": n, "429": m}``: the emulator's answers on an endpoint."""

    def counts(endpoint: str) -> dict[str, int]:
        by_status: dict[str, int] = noxus_emulator.control.counters()["requests"].get(endpoint, {})
        return by_status

    return counts
