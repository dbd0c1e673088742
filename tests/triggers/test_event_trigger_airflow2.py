"""On Airflow 2.11 the event trigger is a clear import error in the DAG file that uses it, and the other
DAG files of the folder still parse; on Airflow 3 it imports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS

MODULE = "airflow_provider_noxus.triggers.events"


@pytest.mark.skipif(AIRFLOW_V_3_0_PLUS, reason="Airflow 2 only")
def test_importing_it_on_airflow_2_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    with pytest.raises(ImportError, match=r"needs Airflow 3\.0 or later .* this is Airflow 2\.11"):
        importlib.import_module(MODULE)


@pytest.mark.skipif(AIRFLOW_V_3_0_PLUS, reason="Airflow 2 only")
def test_only_the_dag_file_that_uses_it_fails_to_parse(tmp_path: Path) -> None:
    from airflow.models.dagbag import DagBag

    (tmp_path / "watches_noxus.py").write_text(
        "from airflow_provider_noxus.triggers.events import NoxusRunEventTrigger\n"
    )
    (tmp_path / "unrelated.py").write_text(
        "from datetime import datetime\nfrom airflow import DAG\n"
        "with DAG('unrelated', schedule=None, start_date=datetime(2026, 1, 1)):\n    pass\n"
    )
    bag = DagBag(dag_folder=str(tmp_path), include_examples=False, safe_mode=False)
    assert set(bag.dag_ids) == {"unrelated"}
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("watches_noxus.py")
    assert "needs Airflow 3.0 or later" in error


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 3 only")
def test_it_imports_on_airflow_3() -> None:
    module = importlib.import_module(MODULE)
    from airflow.triggers.base import BaseEventTrigger

    assert issubclass(module.NoxusRunEventTrigger, BaseEventTrigger)
