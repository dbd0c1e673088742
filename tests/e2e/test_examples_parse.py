"""The example DAGs parse with no emulator and no network, and each says what it shows."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
EXPECTED_DAG_IDS = {path.stem for path in EXAMPLES.glob("noxus_*.py")}

pytestmark = pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS, reason="the examples use the Airflow 3 task SDK (airflow.sdk)"
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection or resolve a name while parsing fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access while parsing the example DAGs: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_example_parses_offline_with_its_docstring(no_network: None) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES), safe_mode=False)

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED_DAG_IDS
    for dag_id in EXPECTED_DAG_IDS:
        doc = bag.dags[dag_id].doc_md or ""
        assert len(doc.split()) > 20, f"{dag_id} needs a docstring that says what it shows"
