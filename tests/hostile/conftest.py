"""Fixtures of the hostile-server tests: scripted servers on 127.0.0.1 and hooks pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.hostile_calls import FAST_POLICY, KEY
from support.hostile_server import Handler, HostileServer
from support.noxus_calls import HookFactory, SleepRecorder, api_for, call_mode, within  # noqa: F401 (fixtures)

from airflow_provider_noxus.hooks.noxus import NoxusHook
from airflow_provider_noxus.protocol import RetryPolicy


@pytest.fixture
def serve() -> Iterator[Callable[..., HostileServer]]:
    """``serve(handler, host=..., tls=...)``: a started server, stopped after the test."""
    servers: list[HostileServer] = []

    def start(handler: Handler, **kwargs: Any) -> HostileServer:
        server = HostileServer(handler, **kwargs).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        assert not server.errors, f"a test server's handler failed: {server.errors!r}"


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder) -> Iterator[Callable[..., NoxusHook]]:
    """``connect(host, key=KEY, policy=FAST_POLICY, **extras)``: a hook on a connection to ``host``.

    Its retry waits are recorded in ``sleeps``, not slept. ``hook.noxus_conn_id`` names the
    connection for a trigger.
    """
    factory = HookFactory(monkeypatch, sleeps, "noxus_hostile")

    def make(
        host: str, *, key: str = KEY, policy: RetryPolicy | None = FAST_POLICY, **extra: Any
    ) -> NoxusHook:
        return factory.make(host, key, policy, extra)

    yield make
    factory.close()
