"""PostgreSQL and Redis as plain processes on loopback, for the distributed deployment (distributed_airflow).

Each server gets a fresh temporary directory and a free port on 127.0.0.1, runs in the foreground in its
own process group and is stopped by its PID on every exit path (context manager, exception, ``atexit``);
its directory is removed then. Debian's ``postgresql`` and ``redis-server`` packages provide the programs
(``scripts/system-deps.sh distributed`` installs them); their packaged services are never used.

PostgreSQL refuses to run as root: as root, the server and ``initdb`` run as the ``postgres`` user that
Debian's package creates, in a directory that user owns.

Usage::

    with PostgresServer(log_dir) as postgres, RedisServer(log_dir) as redis:
        postgres.url("airflow")   # postgresql+psycopg2://postgres@127.0.0.1:PORT/airflow
        redis.url                 # redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .airflow_deployment import StartStop, free_port


class LoopbackServiceError(RuntimeError):
    """A server could not be found, did not start or a command against it failed."""


class LoopbackService(StartStop):
    """One server process on 127.0.0.1 in a temporary directory of its own; a context manager.

    Subclasses give :attr:`name`, :meth:`command` and :meth:`is_ready`, and may prepare the directory in
    :meth:`prepare`.

    :param log_dir: where ``<name>.log`` (the server's output) goes.
    :param port: the port; default a free one.
    :param startup_timeout: seconds to wait for the server to accept clients.
    """

    name = "service"
    #: The signal that shuts the server down quickly and cleanly.
    stop_signal = signal.SIGTERM

    def __init__(
        self, log_dir: str | os.PathLike[str], *, port: int | None = None, startup_timeout: float = 60.0
    ) -> None:
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        """The server's command line (it must stay in the foreground)."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the server accepts clients."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the temporary directory ready for :meth:`command` (nothing by default)."""

    def run_as(self) -> dict[str, Any]:
        """``subprocess`` keyword arguments that set the user the server runs as (default: this one)."""
        return {}

    def start(self) -> None:
        """Create the directory, start the server and wait until it accepts clients."""
        atexit.register(self.stop)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"noxus-{self.name}-"))
        self.prepare()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **self.run_as(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                raise LoopbackServiceError(
                    f"{self.name} exited with {self.process.returncode} at start; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise LoopbackServiceError(
                    f"{self.name} did not accept clients in {self.startup_timeout:.0f} s; see {self.log_path}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server by its PID (SIGKILL after a grace period) and remove its directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, self.stop_signal)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            # Helpers the server forked (PostgreSQL's backends) share its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)


def _program(name: str, patterns: Sequence[str]) -> str:
    """The newest installed program among ``patterns`` (globs), else ``name`` on the PATH."""
    found = sorted((path for pattern in patterns for path in glob.glob(pattern)), key=_version_key)
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise LoopbackServiceError(
            f"{name} is not installed: run `bash scripts/system-deps.sh distributed` (as root)"
        )
    return path


def _version_key(path: str) -> list[int]:
    return [int(part) for part in Path(path).parts if part.isdigit()]


class PostgresServer(LoopbackService):
    """A throw-away PostgreSQL cluster: trust authentication on loopback only, no fsync (tests only).

    :param databases: databases created once the server is up (owner ``postgres``).
    :param max_connections: a distributed Airflow opens many (two schedulers, two triggerers, workers).
    """

    name = "postgres"
    #: "Fast" shutdown: clients are disconnected rather than waited for.
    stop_signal = signal.SIGINT
    user = "postgres"

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        databases: Sequence[str] = ("airflow",),
        max_connections: int = 500,
        port: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(log_dir, port=port, startup_timeout=startup_timeout)
        self.databases = tuple(databases)
        self.max_connections = max_connections
        self.bin_dir = Path(_program("postgres", ["/usr/lib/postgresql/*/bin/postgres"])).parent

    def url(self, database: str = "airflow", driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of ``database``; name the driver (SQLAlchemy 2.1 maps bare ``postgresql`` to
        psycopg 3)."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "data"

    def run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid}

    def prepare(self) -> None:
        assert self.workdir is not None
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "-U", self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        return [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.workdir),
            *options,
        ]  # fmt: skip

    def is_ready(self) -> bool:
        ready = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", *self._client_args()], check=False, timeout=10
        )
        return ready.returncode == 0

    def start(self) -> None:
        super().start()
        for database in self.databases:
            self._run([str(self.bin_dir / "createdb"), *self._client_args(), database], "createdb")

    def dump(self, database: str = "airflow") -> bytes:
        """``pg_dump`` of ``database`` (schema and data, plain SQL)."""
        return self._run([str(self.bin_dir / "pg_dump"), *self._client_args(), database], "pg_dump")

    def _client_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]

    def _run(self, command: list[str], what: str) -> bytes:
        result = subprocess.run(
            command, cwd=self.workdir, capture_output=True, timeout=300, check=False, **self.run_as()
        )
        if result.returncode != 0:
            raise LoopbackServiceError(
                f"{what} exited {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout


class RedisServer(LoopbackService):
    """A throw-away Redis (no persistence) for the Celery broker."""

    name = "redis"

    def __init__(
        self, log_dir: str | os.PathLike[str], *, port: int | None = None, startup_timeout: float = 30.0
    ) -> None:
        super().__init__(log_dir, port=port, startup_timeout=startup_timeout)
        self.program = _program("redis-server", [])

    @property
    def url(self) -> str:
        """The broker URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.program,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip

    def is_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
