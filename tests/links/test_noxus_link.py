"""NoxusRunLink: the "Noxus run" button reads the run_url XCom and no connection."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_noxus.links import noxus as link_module
from airflow_provider_noxus.links.noxus import NoxusRunLink
from airflow_provider_noxus.operators.noxus import NoxusRunOperator
from airflow_provider_noxus.sensors.noxus import NoxusRunSensor


def test_link_is_named_and_attached_to_operator_and_sensor() -> None:
    assert NoxusRunLink().name == "Noxus run"
    assert any(isinstance(link, NoxusRunLink) for link in NoxusRunOperator.operator_extra_links)
    assert any(isinstance(link, NoxusRunLink) for link in NoxusRunSensor.operator_extra_links)


@pytest.mark.parametrize(
    ("stored", "expected"), [("https://app.noxus.ai/workflows/w/runs/r", None), (None, "")]
)
def test_link_comes_from_the_run_url_xcom(
    monkeypatch: pytest.MonkeyPatch, stored: str | None, expected: str | None
) -> None:
    # XCom reads need Airflow's metadata DB or supervisor; the real read runs in the dags tests.
    asked: list[dict[str, Any]] = []

    def get_value(**kwargs: Any) -> str | None:
        asked.append(kwargs)
        return stored

    monkeypatch.setattr(link_module.XCom, "get_value", staticmethod(get_value))
    monkeypatch.delenv("AIRFLOW_CONN_NOXUS_DEFAULT", raising=False)  # no connection is needed
    operator = NoxusRunOperator(task_id="t", workflow_id="w")
    link = NoxusRunLink().get_link(operator, ti_key="key")
    assert link == (stored if expected is None else expected)
    assert asked == [{"ti_key": "key", "key": "run_url"}]


def test_on_the_worker_the_link_is_the_tasks_own_url_and_no_xcom_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Airflow asks for the link on the worker right after execute (or the deferral): the URL the task
    # pushed is already on the operator, so the API server is not asked for it back.
    def get_value(**kwargs: Any) -> str | None:
        raise AssertionError(f"the run_url XCom was read: {kwargs}")

    monkeypatch.setattr(link_module.XCom, "get_value", staticmethod(get_value))
    pushed: dict[str, Any] = {}

    class TaskInstance:
        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    monkeypatch.setenv(
        "AIRFLOW_CONN_NOXUS_DEFAULT",
        '{"conn_type": "noxus", "host": "https://noxus.example", "password": "k"}',
    )
    operator = NoxusRunOperator(task_id="t", workflow_id="w")
    operator.push_run_link({"ti": TaskInstance()}, "r-1")  # type: ignore[arg-type,typeddict-item]
    assert NoxusRunLink().get_link(operator, ti_key="key") == pushed["run_url"]
    assert pushed == {"run_id": "r-1", "run_url": operator.run_url("r-1")}
