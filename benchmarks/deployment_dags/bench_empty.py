"""Deployment benchmark: N mapped empty ``@task``s, Airflow's own cost per task (the floor): this DAG
file imports nothing of the provider.

(It says "airflow" and "dag" in lower case: the dag-processor's safe mode skips files that do not.)
"""

from __future__ import annotations

from deployment_variants import empty_fan_out

empty_fan_out("bench_empty")
