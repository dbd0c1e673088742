"""``airflow dags test`` of ``@task.noxus`` DAGs (tests/dags/noxus_test_taskflow.py) against the emulator:
mapped over questions, with an ``output_model``, with templated arguments, read by downstream tasks; and
an output that does not fit, which fails the task once, without retries."""

from __future__ import annotations

import sqlite3
from typing import Any

from operators.test_noxus_dags import airflow_env, assert_succeeded_with, dags_test

__all__ = ["airflow_env"]  # the module's Airflow home (a fixture)

QUESTIONS = ["Why is the sky blue?", "How far is the moon?", "What is 6 x 7?"]


def test_mapped_typed_and_templated_taskflow_tasks(airflow_env: dict[str, str], noxus_emulator: Any) -> None:
    tasks = dags_test(airflow_env, "noxus_test_taskflow")
    texts = tasks["gather"]["xcom"]["return_value"]
    # One output per question, in order, with the argument given by .partial().
    assert [text.rpartition(" (")[0] for text in texts] == [f"Q: {question}" for question in QUESTIONS]
    assert all(text.endswith(")") and "(None)" not in text for text in texts)  # ``ds`` reached the function
    assert tasks["first_upper"]["xcom"]["return_value"] == {"text": texts[0].upper(), "checked": True}
    assert tasks["read_typed"]["xcom"]["return_value"] == f"{texts[0].upper()} checked=True"
    dated = tasks["ask_templated"]["xcom"]["return_value"]["text"]
    assert dated.startswith("dated 20") and "{{" not in dated
    assert_succeeded_with(tasks, "ask_templated", {"text": dated})
    # Three mapped runs, one typed run, one templated run: exactly one run per task instance.
    assert noxus_emulator.control.counters()["runs_created_total"] == 5


def test_an_output_that_does_not_fit_fails_once_without_retries(
    airflow_env: dict[str, str], noxus_emulator: Any
) -> None:
    tasks = dags_test(airflow_env, "noxus_test_taskflow_misfit", succeeds=False)
    assert tasks["misfit"]["state"] == "failed"
    assert tasks["after"]["state"] == "upstream_failed"
    assert "return_value" not in tasks["misfit"]["xcom"]
    db = sqlite3.connect(f"file:{airflow_env['AIRFLOW_HOME']}/airflow.db?mode=ro", uri=True)
    try:
        ((try_number,),) = db.execute(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND task_id = 'misfit'",
            ("noxus_test_taskflow_misfit",),
        ).fetchall()
    finally:
        db.close()
    assert try_number == 1  # retries=3, yet no retry: a retry would read the same output
    assert noxus_emulator.control.counters()["runs_created_total"] == 1
