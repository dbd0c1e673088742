"""The pytest fixtures shipped with the package (entry point ``pytest11``), used as a user would."""

from __future__ import annotations

import json
import os

import pytest
import requests

from airflow_provider_noxus.emulator import EmulatorServer

pytest_plugins = ("pytester",)


def test_noxus_emulator_serves_the_api(noxus_emulator: EmulatorServer) -> None:
    response = requests.post(
        f"{noxus_emulator.url}/v1/workflows/{noxus_emulator.control.workflow_id('echo')}/runs/sync",
        json={"input": {"text": "from a fixture"}},
        headers={"X-API-Key": noxus_emulator.api_key},
    )

    assert response.status_code == 200
    assert response.json()["output"] == {"text": "from a fixture"}


def test_noxus_emulator_is_reset_before_each_test(noxus_emulator: EmulatorServer) -> None:
    assert noxus_emulator.control.counters()["runs_created_total"] == 0


def test_session_server_allows_loopback_and_holds_sync_3_s(noxus_emulator_server: EmulatorServer) -> None:
    assert noxus_emulator_server.settings.allow_loopback_urls is True
    assert noxus_emulator_server.settings.sync_hold_seconds == 3.0


def test_noxus_connection_sets_the_airflow_connection(noxus_connection: EmulatorServer) -> None:
    connection = json.loads(os.environ["AIRFLOW_CONN_NOXUS_DEFAULT"])

    assert connection == {
        "conn_type": "noxus",
        "host": noxus_connection.url,
        "password": noxus_connection.api_key,
    }


def test_noxus_connection_is_undone_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        def test_uses_it(noxus_connection):
            assert "AIRFLOW_CONN_NOXUS_DEFAULT" in os.environ

        def test_after(noxus_emulator):
            assert "AIRFLOW_CONN_NOXUS_DEFAULT" not in os.environ
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)
