"""pytest fixtures that run the Noxus API emulator, shipped with the package (entry point ``pytest11``).

Use them in your own DAG tests::

    def test_my_dag(noxus_connection):
        echo_id = noxus_connection.control.workflow_id("echo")
        ...  # run a task that uses the ``noxus_default`` connection

- ``noxus_emulator_server`` (session): one emulator for the session, loopback URLs allowed, sync hold 3 s.
- ``noxus_emulator`` (function): the same server, reset (runs, files, faults, counters) before the test.
- ``noxus_connection`` (function): ``noxus_emulator`` plus ``AIRFLOW_CONN_NOXUS_DEFAULT`` pointing at it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_noxus.emulator.server import EmulatorServer


@pytest.fixture(scope="session")
def noxus_emulator_server() -> Iterator[EmulatorServer]:
    """One Noxus API emulator for the whole test session (loopback URLs allowed, sync hold 3 s)."""
    from airflow_provider_noxus.emulator.server import EmulatorServer

    with EmulatorServer(port=0, allow_loopback_urls=True, sync_hold_seconds=3.0) as server:
        yield server


@pytest.fixture
def noxus_emulator(noxus_emulator_server: EmulatorServer) -> EmulatorServer:
    """The session's emulator, with its runs, files, faults and counters forgotten before the test."""
    noxus_emulator_server.control.reset()
    return noxus_emulator_server


@pytest.fixture
def noxus_connection(
    noxus_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmulatorServer]:
    """The reset emulator, with the ``noxus_default`` Airflow connection pointing at it (env var)."""
    connection = {"conn_type": "noxus", "host": noxus_emulator.url, "password": noxus_emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_NOXUS_DEFAULT", json.dumps(connection))
    yield noxus_emulator
