"""A real multi-process Airflow 3 on loopback, for end-to-end tests, UI tests and ``make deploy``.

Everything lives in one ``AIRFLOW_HOME`` given by the caller (SQLite metadata DB, LocalExecutor). Each
component runs in its own process group and is stopped by its PID on every exit path (normal exit,
exception, Ctrl-C, ``atexit``). Component output and task logs are kept under ``log_dir``.

Usage::

    with AirflowDeployment(home, dags_folder, env={"AIRFLOW_CONN_NOXUS_DEFAULT": "..."}) as airflow:
        run_id = airflow.trigger_dag("my_dag")
        state = airflow.wait_for_dag_run("my_dag", run_id)
        airflow.task_instances("my_dag", run_id)

    # only the UI / REST API (UI browser tests):
    with AirflowDeployment(home, dags_folder, components=("api-server",)) as airflow:
        airflow.api_url

The REST API needs no login: the api-server runs with ``SIMPLE_AUTH_MANAGER_ALL_ADMINS``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

#: Every component this harness knows how to run, in start order.
ALL_COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")
#: The default set: ``dags reserialize`` stands in for the dag-processor (one parse, no CPU after).
DEFAULT_COMPONENTS = ("api-server", "scheduler", "triggerer")
TERMINAL_DAG_RUN_STATES = frozenset({"success", "failed"})
#: Where each kind of component reports its heartbeat in ``/api/v2/monitor/health``.
HEALTH_KEYS = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}


class AirflowDeploymentError(RuntimeError):
    """A component did not start, or an API call failed; the message says where to look."""


def component_kind(component: str) -> str:
    """What a component is: ``scheduler-2`` is a ``scheduler`` (several instances are numbered)."""
    return re.sub(r"-\d+$", "", component)


StartedT = TypeVar("StartedT", bound="StartStop")


class StartStop:
    """Something started and stopped as a context manager: :meth:`stop` runs on every exit path, also
    when :meth:`start` fails half-way (it must cope with whatever was started)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: StartedT) -> StartedT:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowDeployment(StartStop):
    """Airflow 3 components in one ``AIRFLOW_HOME`` on loopback, as a context manager.

    :param home: the ``AIRFLOW_HOME`` (created if missing; SQLite DB ``airflow.db`` inside). Reusing a
        home skips nothing but makes ``db migrate`` quick.
    :param dags_folder: the folder the DAGs are read from.
    :param env: extra environment for every component (connections, variables, settings); it wins over
        the harness defaults.
    :param components: which long-running components to start, among :attr:`known_components`; several
        instances of one are numbered (``scheduler-1``, ``scheduler-2``). Without a ``dag-processor`` the
        DAGs are serialized once with ``airflow dags reserialize``.
    :param log_dir: where component output (``<component>.log``) and task logs (``tasks/``) go;
        default ``<home>/logs``.
    :param port: api-server port; default a free one.
    :param parallelism: LocalExecutor worker processes.
    :param python: the interpreter whose ``airflow`` runs; default this one.
    :param startup_timeout: seconds to wait for every component to report healthy.
    """

    #: The kinds of component this harness can start.
    known_components: tuple[str, ...] = ALL_COMPONENTS

    def __init__(
        self,
        home: str | os.PathLike[str],
        dags_folder: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        *,
        components: Iterable[str] = DEFAULT_COMPONENTS,
        log_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        parallelism: int = 4,
        python: str = sys.executable,
        startup_timeout: float = 120.0,
    ) -> None:
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.components = tuple(components)
        unknown = {c for c in self.components if component_kind(c) not in self.known_components}
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; choose among {self.known_components}")
        self.log_dir = Path(log_dir).resolve() if log_dir else self.home / "logs"
        self.task_log_dir = self.log_dir / "tasks"
        self.port = port or free_port()
        self.python = python
        self.startup_timeout = startup_timeout
        self.env = self._build_env(env or {}, parallelism)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._starts: dict[str, int] = {}

    # ----------------------------------------------------------------------------- set-up and tear-down

    @property
    def api_url(self) -> str:
        """Base URL of the api-server (UI at ``/``, REST API under ``/api/v2``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        """The SQLite metadata database (open it read-only)."""
        return self.home / "airflow.db"

    def _build_env(self, extra: Mapping[str, str], parallelism: int) -> dict[str, str]:
        # Inherited AIRFLOW* settings (a test session's unit-test mode, a developer's own home) would
        # leak into the deployment: start from the environment without them.
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(40),
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(20),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.task_log_dir),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # A short loop keeps a test's wall time low without busy-looping two cores.
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def start(self) -> None:
        """Migrate the DB, serialize the DAGs, start the components and wait until they are healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.task_log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        self.airflow_cli("db", "migrate")
        if "dag-processor" not in map(component_kind, self.components):
            self.airflow_cli("dags", "reserialize")
        for component in self.components:
            self.start_component(component)
        self.wait_until_healthy()

    def airflow_cli(self, *args: str, timeout: float = 300.0) -> str:
        """Run one ``airflow`` command to completion in this deployment's environment; return its output.

        :raises AirflowDeploymentError: when it exits non-zero (with the output's tail).
        """
        name = "cli-" + "-".join(args[:2])
        log_path = self.log_dir / f"{name}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [self.python, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        log_path.write_text(output)
        if result.returncode != 0:
            raise AirflowDeploymentError(
                f"`airflow {' '.join(args)}` exited {result.returncode}; output in {log_path}:\n"
                + output[-2000:]
            )
        return output

    def _command(self, component: str) -> list[str]:
        base = [self.python, "-m", "airflow"]
        kind = component_kind(component)
        if kind == "api-server":
            return [*base, "api-server", "-H", "127.0.0.1", "-p", str(self.port), "--workers", "1"]
        if kind in ("scheduler", "triggerer"):
            # Log servers would clash when several components share the host.
            return [*base, kind, "--skip-serve-logs"]
        return [*base, "dag-processor"]

    def component_env(self, component: str) -> dict[str, str]:
        """The environment one component runs with (the same for all here)."""
        return self.env

    def start_component(self, component: str) -> subprocess.Popen[bytes]:
        """Start one component in its own process group; its output goes to ``<log_dir>/<name>.log``.

        A component started again (after :meth:`kill_component`) logs to ``<name>-2.log`` and so on.
        """
        running = self.processes.get(component)
        if running is not None and running.poll() is None:
            raise AirflowDeploymentError(f"{component} is already running (pid {running.pid})")
        self._starts[component] = self._starts.get(component, 0) + 1
        suffix = "" if self._starts[component] == 1 else f"-{self._starts[component]}"
        log_file = open(self.log_dir / f"{component}{suffix}.log", "ab")  # noqa: SIM115 - closed in stop
        self._log_files[component] = log_file
        self.processes[component] = subprocess.Popen(
            self._command(component),
            env=self.component_env(component),
            cwd=self.home,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so its children stop with it
        )
        return self.processes[component]

    def log_path(self, component: str) -> Path:
        """Output file of the latest start of ``component``."""
        starts = self._starts.get(component, 1)
        return self.log_dir / (f"{component}.log" if starts == 1 else f"{component}-{starts}.log")

    def kill_component(self, component: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Send ``sig`` to the component's process group and wait for its leader to exit; then SIGKILL
        whatever is left of its process tree.

        With SIGKILL the whole tree dies at once, as on a crashed host: Airflow starts task processes in
        sessions of their own, so the group alone would leave them running. The component is forgotten:
        :meth:`check_running` no longer looks at it, and :meth:`start_component` may start it again.
        """
        self._terminate([component], sig, timeout)
        self.processes.pop(component, None)

    def stop(self) -> None:
        """Stop every component this deployment started (SIGTERM, then SIGKILL after a grace period)."""
        self._terminate(list(reversed(self.processes)), signal.SIGTERM, timeout=15.0)
        self.processes.clear()
        atexit.unregister(self.stop)

    def _terminate(self, components: list[str], sig: int, timeout: float) -> None:
        """Signal the components all at once, give their leaders ``timeout`` seconds in all to exit, then
        SIGKILL what is left of each process tree (LocalExecutor workers, the triggerer's runner, task
        processes)."""
        running = {c: self.processes[c] for c in components if c in self.processes}
        # Taken now: once a leader is gone its children are re-parented and cannot be found from it.
        trees = {component: _descendants(process.pid) for component, process in running.items()}
        for component, process in running.items():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                if sig == signal.SIGKILL:
                    _kill_all(trees[component])
        deadline = time.monotonic() + timeout
        for component, process in running.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            _kill_all(trees[component])
            process.wait(timeout=10)
            log_file = self._log_files.pop(component, None)
            if log_file is not None:
                log_file.close()

    def wait_until_healthy(self) -> None:
        """Wait for the api-server to answer and for the scheduler/triggerer/dag-processor heartbeats."""
        deadline = time.monotonic() + self.startup_timeout
        kinds = {component_kind(c) for c in self.components}
        expected = [HEALTH_KEYS[kind] for kind in sorted(kinds) if kind in HEALTH_KEYS]
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            if "api-server" not in kinds:
                return  # nothing to ask; the processes are alive
            try:
                health = self.api("GET", "/api/v2/monitor/health")
            except (OSError, AirflowDeploymentError) as error:
                last_error = str(error)
            else:
                unhealthy = [name for name in expected if (health.get(name) or {}).get("status") != "healthy"]
                if not unhealthy:
                    return
                last_error = f"not healthy yet: {unhealthy}"
            time.sleep(0.5)
        raise AirflowDeploymentError(
            f"Airflow did not become healthy in {self.startup_timeout:.0f} s ({last_error}); "
            f"see the logs in {self.log_dir}"
        )

    # ----------------------------------------------------------------------------- REST API

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 30.0) -> Any:
        """Call the REST API (``path`` from the root, e.g. ``/api/v2/dags``); return the decoded JSON.

        :raises AirflowDeploymentError: on an HTTP error status (with the answer's body).
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:1000]
            raise AirflowDeploymentError(f"{method} {path} -> {error.code}: {detail}") from error
        return json.loads(raw) if raw else None

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120.0) -> None:
        """Wait until the DAGs are parsed and known to the API (the dag-processor's first pass).

        :raises AirflowDeploymentError: after ``timeout`` seconds, naming the missing DAGs and any
            import errors.
        """
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        while True:
            known = {dag["dag_id"] for page in self._pages("/api/v2/dags") for dag in page["dags"]}
            if wanted <= known:
                return
            if time.monotonic() > deadline:
                errors = self.api("GET", "/api/v2/importErrors")
                raise AirflowDeploymentError(
                    f"DAGs {sorted(wanted - known)} not parsed after {timeout:.0f} s; import errors: {errors}"
                )
            self.check_running()
            time.sleep(1.0)

    def trigger_dag(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Start a DAG run now; return its run id."""
        run = self.api(
            "POST",
            f"/api/v2/dags/{_quote(dag_id)}/dagRuns",
            {"logical_date": None, "conf": dict(conf or {})},
        )
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The DAG run as the REST API shows it."""
        result: dict[str, Any] = self.api("GET", f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")
        return result

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> str:
        """Wait until the DAG run is ``success`` or ``failed``; return that state.

        :raises AirflowDeploymentError: after ``timeout`` seconds, with the task instance states.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in TERMINAL_DAG_RUN_STATES:
                return state
            self.check_running()
            time.sleep(1.0)
        states = self.task_instance_states(dag_id, run_id)
        raise AirflowDeploymentError(
            f"DAG run {dag_id}/{run_id} not finished after {timeout:.0f} s; task states: {states}"
        )

    def check_running(self) -> None:
        """Raise if a component this deployment started has exited (naming its log file)."""
        for component, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowDeploymentError(
                    f"{component} died with {process.returncode}; see {self.log_path(component)}"
                )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones included, one entry per map index)."""
        found: list[dict[str, Any]] = []
        for page in self._pages(f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances"):
            found.extend(page["task_instances"])
        return found

    def task_instance_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{"task_id" or "task_id[map_index]": state}`` for the run."""
        states: dict[str, str | None] = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = ti["state"]
        return states

    def task_instance_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        """Every try of one task instance (earlier tries from the history table, then the current one)."""
        path = f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances/{_quote(task_id)}"
        if map_index >= 0:
            path += f"/{map_index}"
        tries: list[dict] = self.api("GET", f"{path}/tries")["task_instances"]
        return tries

    def set_task_instance_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1
    ) -> Any:
        """Mark one task instance ``failed`` or ``success`` the way the UI does (PATCH)."""
        path = f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances/{_quote(task_id)}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.api("PATCH", path, {"new_state": state})

    def clear_task_instances(self, dag_id: str, run_id: str, task_ids: list[Any]) -> Any:
        """Clear task instances the way the UI does (``task_ids``: ids or ``[task_id, map_index]``)."""
        body = {"dag_run_id": run_id, "task_ids": task_ids, "dry_run": False, "only_failed": False}
        return self.api("POST", f"/api/v2/dags/{_quote(dag_id)}/clearTaskInstances", body)

    def xcom_entries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """XCom entries of one task (every map index), values included."""
        found: list[dict[str, Any]] = []
        base = f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances/{_quote(task_id)}"
        for page in self._pages(f"{base}/xcomEntries"):
            for entry in page["xcom_entries"]:
                query = urllib.parse.urlencode({"map_index": entry["map_index"], "stringify": "false"})
                found.append(self.api("GET", f"{base}/xcomEntries/{_quote(entry['key'])}?{query}"))
        return found

    def task_log_files(self, dag_id: str, run_id: str | None = None) -> list[Path]:
        """The task log files written for a DAG (one per try and map index), optionally one run only."""
        root = self.task_log_dir / f"dag_id={dag_id}"
        if run_id is not None:
            root = root / f"run_id={run_id}"
        return sorted(root.rglob("*.log")) if root.exists() else []

    def _pages(self, path: str, limit: int = 100) -> Iterator[dict[str, Any]]:
        offset = 0
        separator = "&" if "?" in path else "?"
        while True:
            page = self.api("GET", f"{path}{separator}limit={limit}&offset={offset}")
            yield page
            offset += limit
            if offset >= int(page.get("total_entries", 0)):
                return


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _kill_all(processes: Iterable[psutil.Process]) -> None:
    """SIGKILL each process still alive (psutil checks that a PID was not reused)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.kill()


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
