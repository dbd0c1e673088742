"""What a Noxus task's worker execution loads, loaded once per Celery worker instead of once per task.

Airflow's Celery worker forks every task process from its pool processes, which are forked from the
worker's main process: whatever that process imported at start-up costs its task processes nothing.
Airflow loads only its own modules there, so each Noxus task process loads the provider's operator, its
sync HTTP client (``requests`` and ``urllib3``, about half the task process's own CPU) and the trigger
it defers with. Importing this module in the worker's main process moves that to start-up. In
``airflow.cfg``::

    [celery]
    celery_config_options = airflow_provider_noxus.worker_preload.CELERY_CONFIG

:data:`CELERY_CONFIG` is Airflow's default Celery configuration with this module added to Celery's
``imports``; a deployment with a configuration of its own adds ``"airflow_provider_noxus.worker_preload"``
to its ``imports`` instead. Executors that start each task in a fresh interpreter (Kubernetes) gain
nothing from it. BENCHMARKS.md ("The whole deployment") has the numbers.

Nothing here starts a thread, opens a connection or reads one: the modules are safe to fork.
"""

from __future__ import annotations

from typing import Any

import airflow_provider_noxus.decorators.noxus
import airflow_provider_noxus.hooks._transport.requests_transport
import airflow_provider_noxus.operators.noxus
import airflow_provider_noxus.sensors.noxus
import airflow_provider_noxus.triggers.noxus  # noqa: F401  (every import above is the point)


def __getattr__(name: str) -> Any:
    """``CELERY_CONFIG``, built when Celery asks for it (it needs Airflow's Celery provider)."""
    if name != "CELERY_CONFIG":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    imports = tuple(DEFAULT_CELERY_CONFIG.get("imports") or ())
    return {**DEFAULT_CELERY_CONFIG, "imports": (*imports, __name__)}
