"""The async clients' connection cache: one read per connection and minute, however many triggers start."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.noxus_tasks import first_event

from airflow_provider_noxus import connection as connection_module
from airflow_provider_noxus.connection import CONNECTION_CACHE
from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.triggers.noxus import NoxusRunTrigger


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The connection ids read through Airflow (the real read, counted)."""
    CONNECTION_CACHE.forget()
    counted: list[str] = []
    real_read = connection_module.aget_connection

    async def counting_read(conn_id: str) -> Any:
        counted.append(conn_id)
        return await real_read(conn_id)

    monkeypatch.setattr(connection_module, "aget_connection", counting_read)
    yield counted
    CONNECTION_CACHE.forget()


def point_at(monkeypatch: pytest.MonkeyPatch, emulator: Any, key: str | None = None) -> None:
    connection = {"conn_type": "noxus", "host": emulator.url, "password": key or emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_CACHED", json.dumps(connection))


async def test_a_burst_of_clients_reads_the_connection_once(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    point_at(monkeypatch, noxus_emulator)

    async def client_base_url() -> str:
        async with NoxusHook("noxus_cached").async_client() as client:
            return client.base_url

    urls = await asyncio.gather(*(client_base_url() for _ in range(200)))
    assert set(urls) == {noxus_emulator.url}
    assert reads == ["noxus_cached"]


async def test_the_cache_expires_and_a_changed_variable_counts_at_once(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    point_at(monkeypatch, noxus_emulator)
    hook = NoxusHook("noxus_cached")
    async with hook.async_client():
        pass
    async with hook.async_client():
        pass
    assert len(reads) == 1
    point_at(monkeypatch, noxus_emulator, key="rotated-key")
    async with hook.async_client() as client:
        assert client.settings.api_key == "rotated-key"
    assert len(reads) == 2
    monkeypatch.setattr(connection_module, "CONNECTION_CACHE_TTL_S", 0.0)
    CONNECTION_CACHE.forget()
    for _ in range(2):
        async with hook.async_client():
            pass
    assert len(reads) == 4, "an entry older than the TTL is read again"


async def test_a_refused_key_is_forgotten_at_once(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    point_at(monkeypatch, noxus_emulator, key="not-the-key")
    trigger = NoxusRunTrigger("noxus_cached", "wf", "run-1", poll_interval=0.05, wait_strategy="poll")
    assert (await first_event(trigger))["error_type"] == "NoxusAuthError"
    assert (await first_event(trigger))["error_type"] == "NoxusAuthError"
    # Each trigger reads the connection, then once more when its key is refused (the key may have
    # been rotated); the next trigger reads it again instead of taking the refused key from the cache.
    assert reads == ["noxus_cached"] * 4


async def test_entries_past_their_ttl_or_outdated_are_dropped(
    noxus_emulator: Any, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    """No former value of a variable (and its key) stays in memory."""
    hook = NoxusHook("noxus_cached")
    for index in range(5):
        point_at(monkeypatch, noxus_emulator, key=f"nxk-evict-{index}-0f9e8d7c")
        async with hook.async_client() as client:
            assert client.settings.api_key == f"nxk-evict-{index}-0f9e8d7c"
    assert len(CONNECTION_CACHE) == 1
    monkeypatch.setattr(connection_module, "CONNECTION_CACHE_TTL_S", 0.0)
    point_at(monkeypatch, noxus_emulator, key="nxk-evict-5-0f9e8d7c")
    async with hook.async_client():
        pass  # a read stores an entry that expires at once...
    assert len(CONNECTION_CACHE) == 1
    other = {"conn_type": "noxus", "password": "nxk-evict-other-1a2b3c4d"}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_OTHER", json.dumps(other))
    async with NoxusHook("noxus_other").async_client():
        pass  # ...and the next read drops it
    assert len(CONNECTION_CACHE) == 1
