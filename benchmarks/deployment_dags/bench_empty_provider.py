"""Deployment benchmark: N mapped empty ``@task``s in a DAG file that imports the provider's operator,
as every Noxus DAG file does: what importing the provider adds to each task process (the worker
parses the task's DAG file for every task it runs, a deferred task's resume included)."""

from __future__ import annotations

from deployment_variants import empty_fan_out

import airflow_provider_noxus.operators.noxus  # noqa: F401

empty_fan_out("bench_empty_provider")
