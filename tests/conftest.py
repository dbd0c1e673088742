"""Test-wide set-up: Airflow must find its home before anything imports it."""

from __future__ import annotations

import os
import tempfile

# Set before the first ``import airflow`` anywhere in the test session, or ~/airflow is created.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="noxus-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
