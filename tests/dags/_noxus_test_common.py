"""Shared settings of the DAGs run by ``airflow dags test`` in tests/operators/test_noxus_dags.py."""

from __future__ import annotations

import os
from datetime import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]

__all__ = ["DAG", "ECHO_WORKFLOW_ID", "FAST", "START_DATE"]

#: Workflow ids of the emulator's built-in workflows, given by the test through the environment.
ECHO_WORKFLOW_ID = os.environ.get("NOXUS_TEST_ECHO_WORKFLOW_ID", "echo")
START_DATE = datetime(2026, 1, 1)
#: Short polls: the emulator's runs last a fraction of a second.
FAST = {"poll_interval": 0.2}
