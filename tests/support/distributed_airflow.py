"""A distributed Airflow 3 on loopback, as production runs it: PostgreSQL, Redis, the CeleryExecutor, and
several schedulers, triggerers and Celery workers. For the distributed e2e tests and
``make deploy-distributed``.

It is :class:`~airflow_deployment.AirflowDeployment` (same REST API helpers, start and stop by PID on
every exit path) plus:

- a PostgreSQL metadata DB and a Redis broker of its own (:mod:`loopback_services`), started before
  Airflow and stopped after it;
- numbered instances of a component (``scheduler-1``, ``scheduler-2``, ``triggerer-2``, ``worker-1``);
  each reports its own name as its host name (:mod:`component_hostname`), so the ``job`` and
  ``task_instance`` rows say which triggerer holds a trigger and which worker ran a try;
- ``worker-N``: ``airflow celery worker`` with a distinct Celery node name and its own queues;
- :meth:`sql` to read the metadata DB, and :meth:`live_jobs`.

Killing a component (:meth:`kill_component`, SIGKILL by default) kills its whole process tree, task
processes included, as a crashed host would; a replacement is started with :meth:`start_component`
under a new name (``worker-3``) or the same one.

Usage::

    queues = {"worker-1": "default,crash"}
    with DistributedAirflowDeployment(home, dags_folder, env, worker_queues=queues) as af:
        run_id = af.trigger_dag("my_dag")
        af.kill_component("triggerer-1")
        af.wait_for_dag_run("my_dag", run_id)
        af.sql("SELECT state, count(*) FROM task_instance GROUP BY state")
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .airflow_deployment import (
    ALL_COMPONENTS,
    AirflowDeployment,
    AirflowDeploymentError,
    component_kind,
)
from .component_hostname import HOSTNAME_VARIABLE
from .loopback_services import PostgresServer, RedisServer

#: API server and UI, DAG parsing, and two of each of the rest.
DISTRIBUTED_COMPONENTS = (
    "api-server",
    "dag-processor",
    "scheduler-1",
    "scheduler-2",
    "triggerer-1",
    "triggerer-2",
    "worker-1",
    "worker-2",
)
#: ``job.job_type`` of each component kind that heartbeats through the ``job`` table.
JOB_TYPES = {"scheduler": "SchedulerJob", "triggerer": "TriggererJob", "dag-processor": "DagProcessorJob"}
DEFAULT_QUEUE = "default"


class DistributedAirflowDeployment(AirflowDeployment):
    """Airflow 3 with the CeleryExecutor on PostgreSQL and Redis, several instances of each component.

    :param home: the ``AIRFLOW_HOME`` (created if missing; the DB is in PostgreSQL).
    :param dags_folder: the folder the DAGs are read from.
    :param env: extra environment for every component; it wins over the harness defaults.
    :param components: what to start, among ``api-server``, ``dag-processor``, ``scheduler-N``,
        ``triggerer-N`` and ``worker-N``.
    :param worker_concurrency: task slots per Celery worker.
    :param worker_queues: ``{"worker-1": "default,crash"}``: the Celery queues a worker consumes,
        comma-separated; a worker not named consumes ``default`` only.
    :param parallelism: running tasks per scheduler.
    :param kwargs: the rest of :class:`AirflowDeployment`'s options (``log_dir``, ``port``, ...).
    """

    known_components = (*ALL_COMPONENTS, "worker")

    def __init__(
        self,
        home: str | os.PathLike[str],
        dags_folder: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        *,
        components: Iterable[str] = DISTRIBUTED_COMPONENTS,
        worker_concurrency: int = 4,
        worker_queues: Mapping[str, str] | None = None,
        parallelism: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(home, dags_folder, env, components=components, parallelism=parallelism, **kwargs)
        self.worker_concurrency = worker_concurrency
        self.worker_queues = dict(worker_queues or {})
        self._up = False  # every component has been ready once
        self._started_at: dict[str, datetime] = {}
        self.postgres = PostgresServer(self.log_dir)
        self.redis = RedisServer(self.log_dir)
        support = str(Path(__file__).resolve().parent)
        pythonpath = os.pathsep.join(filter(None, [support, self.env.get("PYTHONPATH")]))
        self.env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url("airflow"),
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                # SQLAlchemy 2.1 would read a bare postgresql:// as psycopg 3: name the driver.
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url("airflow"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "component_hostname.hostname",
                "PYTHONPATH": pythonpath,
            }
        )
        self.env.update(env or {})

    # ----------------------------------------------------------------------------- set-up and tear-down

    def start(self) -> None:
        """Start PostgreSQL and Redis, then Airflow; wait until every component is up."""
        self.postgres.start()
        self.redis.start()
        super().start()

    def stop(self) -> None:
        """Stop Airflow's components, then Redis and PostgreSQL."""
        super().stop()
        self.redis.stop()
        self.postgres.stop()

    def component_env(self, component: str) -> dict[str, str]:
        return {**self.env, HOSTNAME_VARIABLE: component}

    def _command(self, component: str) -> list[str]:
        if component_kind(component) != "worker":
            return super()._command(component)
        return [
            self.python, "-m", "airflow", "celery", "worker",
            "--celery-hostname", f"{component}@%h",
            "--queues", self.worker_queues.get(component, DEFAULT_QUEUE),
            "--concurrency", str(self.worker_concurrency),
            "--skip-serve-logs",
            # No start-up handshake with the other workers: faster, and nothing here needs it.
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip

    def start_component(self, component: str, *, queues: str | None = None) -> subprocess.Popen[bytes]:
        """Start one component (see :meth:`AirflowDeployment.start_component`); once the deployment is
        up, wait until it is ready too (its heartbeat, or a worker's "ready").

        :param queues: a worker's Celery queues, comma-separated (default: as given at construction).
        """
        if queues is not None:
            self.worker_queues[component] = queues
        self._started_at[component] = datetime.now(timezone.utc)
        process = super().start_component(component)
        if self._up:
            self._wait_until_ready([component], time.monotonic() + self.startup_timeout)
        return process

    def wait_until_healthy(self) -> None:
        """The api-server's health check, then every instance's own heartbeat and every worker ready."""
        deadline = time.monotonic() + self.startup_timeout
        super().wait_until_healthy()
        self._wait_until_ready(self.components, deadline)
        self._up = True

    def _wait_until_ready(self, components: Iterable[str], deadline: float) -> None:
        waiting = set(components)
        while True:
            self.check_running()
            live = self.live_jobs()
            waiting = {c for c in waiting if not self._is_ready(c, live)}
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise AirflowDeploymentError(
                    f"not ready after {self.startup_timeout:.0f} s: {sorted(waiting)}; see the logs in "
                    f"{self.log_dir}"
                )
            time.sleep(0.5)

    def _is_ready(self, component: str, live: Mapping[str, Mapping[str, Any]]) -> bool:
        kind = component_kind(component)
        started = self._started_at[component]
        if kind == "worker":
            # Celery logs "<node name> ready." once it consumes its queues.
            lines = self.log_path(component).read_text(errors="replace").splitlines()
            return any(f"{component}@" in line and " ready." in line for line in lines)
        if kind in JOB_TYPES:
            # A job row of this start (one left by an earlier start under the same name does not count).
            job = live.get(component)
            return job is not None and job["job_type"] == JOB_TYPES[kind] and job["start_date"] >= started
        return True

    # ----------------------------------------------------------------------------- the metadata DB

    def sql(self, query: str, params: Mapping[str, Any] | Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Run one statement on the metadata DB (autocommit) and return its rows as dicts."""
        import psycopg2.extras  # the ``distributed`` extra; not needed to import this module

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.postgres.port, user=self.postgres.user, dbname="airflow"
        )
        try:
            connection.autocommit = True
            with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                cursor.execute(query, params)
                return [dict(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            connection.close()

    def live_jobs(self) -> dict[str, dict[str, Any]]:
        """``{host name: job row}`` of the running jobs (schedulers, triggerers, dag-processor), the latest
        per host; ``seconds_since_heartbeat`` is added."""
        rows = self.sql(
            "SELECT DISTINCT ON (hostname) id, hostname, job_type, start_date, latest_heartbeat,"
            " extract(epoch FROM now() - latest_heartbeat) AS seconds_since_heartbeat"
            " FROM job WHERE state = 'running' ORDER BY hostname, id DESC"
        )
        return {str(row["hostname"]): row for row in rows}

    @property
    def db_path(self) -> Path:
        """There is no SQLite file here."""
        raise AttributeError("the metadata DB is PostgreSQL here: read it with sql() or dump_database()")

    def dump_database(self) -> bytes:
        """``pg_dump`` of the metadata DB."""
        return self.postgres.dump("airflow")
