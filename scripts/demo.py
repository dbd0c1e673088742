"""Run every example DAG against the Noxus emulator with ``airflow dags test``; print a table of results.

Called by ``scripts/demo.sh`` (``make demo``) with the project's Airflow 3 virtualenv. Steps:

1. start the emulator (default demo key, port 8765, loopback file URLs allowed) in its own process group,
   and a small loopback HTTP server that serves ``dags_examples/data/`` and receives webhooks;
2. ``airflow db migrate`` once in an ``AIRFLOW_HOME`` kept under ``~/.cache/airflow-provider-noxus``
   (a second run skips it);
3. ``airflow dags test`` every example DAG at once (``scripts/demo_runner.py``: Airflow is imported
   once, then one process is forked per DAG), each with its own copy of that migrated SQLite DB (one
   SQLite file takes one writer at a time; the copies never wait on each other). Most of a ``dags
   test`` is Airflow starting up and the runs waiting on the emulator, so running them side by side
   takes about as long as the slowest one instead of their sum. Output is kept in
   ``<home>/demo-logs/<dag>.log``;
4. read each run's state and its last result from its DB and print them, with the DAG part's wall time;
5. stop both servers and every ``dags test`` on every exit path; exit 1 if any DAG failed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "dags_examples"
RUNNER = REPO / "scripts" / "demo_runner.py"
DEMO_KEY = "noxus-demo-key"
#: Longest ``airflow dags test`` of one example (the slowest takes about 40 s beside the others).
DAG_TIMEOUT_S = 240
DEFAULT_HOME = Path.home() / ".cache" / "airflow-provider-noxus" / "demo-home"


@dataclass
class DagResult:
    """What the table shows for one example DAG."""

    dag_id: str
    state: str
    seconds: float
    summary: str


class LoopbackFiles(http.server.ThreadingHTTPServer):
    """Serves the example data over HTTP on 127.0.0.1 and records webhook deliveries (POST /webhook)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.webhooks: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _LoopbackHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LoopbackHandler(http.server.SimpleHTTPRequestHandler):
    server: LoopbackFiles

    def translate_path(self, path: str) -> str:
        return str(self.server.root / Path(path.split("?", 1)[0]).name)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with contextlib.suppress(ValueError):
            self.server.webhooks.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@contextlib.contextmanager
def loopback_files(root: Path) -> Iterator[LoopbackFiles]:
    server = LoopbackFiles(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def emulator(port: int, log_path: Path) -> Iterator[str]:
    """The emulator as a child process in its own process group; stopped by its PID on exit."""
    url = f"http://127.0.0.1:{port}"
    if _answers(url):
        raise SystemExit(
            f"Port {port} is already in use (an emulator left running?). Stop it, or pick another port "
            f"with NOXUS_DEMO_PORT=<port> make demo."
        )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_noxus.emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--allow-loopback-urls",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"The emulator did not start; see {log_path}:\n{log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.2)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _answers(url: str) -> bool:
    request = urllib.request.Request(f"{url}/v1/admin/me", headers={"X-API-Key": DEMO_KEY})
    try:
        with urllib.request.urlopen(request, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # something answers HTTP there
    except OSError:
        return False


def airflow_env(home: Path, emulator_url: str) -> dict[str, str]:
    """Environment of every ``airflow`` command: the demo home, SQLite, the emulator connection."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **noxus_env(emulator_url),
        }
    )
    return env


def noxus_env(emulator_url: str) -> dict[str, str]:
    """The ``noxus_default`` connection to the emulator, and loopback file URLs allowed."""
    return {
        "AIRFLOW_CONN_NOXUS_DEFAULT": json.dumps(
            {"conn_type": "noxus", "host": emulator_url, "password": DEMO_KEY}
        ),
        # The demo's file server is on loopback; a real deployment gives public URLs instead.
        "NOXUS_ALLOW_PRIVATE_FILE_URLS": "1",
    }


def migrate_once(home: Path, env: dict[str, str]) -> None:
    """``airflow db migrate`` the first time, and again only when the Airflow version changes."""
    from importlib.metadata import version

    stamp = home / f".migrated-airflow-{version('apache-airflow')}"
    if stamp.exists():
        return
    print(f"Creating the Airflow metadata DB in {home} (once) ...", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{(result.stdout + result.stderr).decode()[-3000:]}")
    stamp.touch()


def dag_conf(dag_id: str, files: LoopbackFiles) -> dict[str, Any]:
    """Per-DAG run conf that points the examples at the demo's loopback servers."""
    confs: dict[str, dict[str, Any]] = {
        "noxus_file_inputs": {"document_url": f"{files.url}/quarterly_report.txt"},
        "noxus_fire_and_forget": {"callback_url": f"{files.url}/webhook"},
        "noxus_fan_out": {"document_count": 10},
    }
    return confs.get(dag_id, {})


def run_dags(
    dag_ids: list[str], env: dict[str, str], files: LoopbackFiles, home: Path, log_dir: Path
) -> dict[str, tuple[float, bool]]:
    """``airflow dags test`` every DAG side by side through ``scripts/demo_runner.py``.

    Each DAG gets a fresh copy of the migrated DB (``<home>/runs/<dag>.db``) and its log.
    :return: per DAG that ended, its wall time and whether it was stopped for taking too long.
    """
    jobs = []
    for dag_id in dag_ids:
        db = home / "runs" / f"{dag_id}.db"
        db.parent.mkdir(exist_ok=True)
        copy_db(home / "airflow.db", db)
        # -f: parse only this DAG's file (each example file is named after its DAG)
        argv = ["dags", "test", dag_id, "-f", str(EXAMPLES / f"{dag_id}.py")]
        argv += ["-c", json.dumps(dag_conf(dag_id, files))]
        jobs.append({"dag_id": dag_id, "db": str(db), "log": str(log_dir / f"{dag_id}.log"), "argv": argv})
    ended: dict[str, tuple[float, bool]] = {}
    with (log_dir / "runner.log").open("wb") as runner_log:
        process = subprocess.Popen(
            [sys.executable, str(RUNNER), "--timeout", str(DAG_TIMEOUT_S)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=runner_log,
            start_new_session=True,
        )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(json.dumps(jobs).encode())
        process.stdin.close()
        deadline = time.monotonic() + DAG_TIMEOUT_S + 30
        while len(ended) < len(jobs) and time.monotonic() < deadline:
            readable, _, _ = select.select([process.stdout], [], [], 1.0)
            if not readable:
                continue
            line = process.stdout.readline()
            if not line:
                break  # the runner ended
            done = json.loads(line)
            ended[done["dag_id"]] = (float(done["seconds"]), bool(done["timed_out"]))
            print(f"  {done['dag_id']} done in {done['seconds']:.1f} s", flush=True)
    finally:
        stop_process_group(process)
    return ended


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite DB (its write-ahead log included), replacing ``target``."""
    for stale in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        stale.unlink(missing_ok=True)
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, SIGKILL it after 10 s; by its PID only."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def last_run_result(db: Path, dag_id: str) -> tuple[str, str]:
    """State of the DAG's latest run, and a short summary of the last value a task returned in it."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT id, run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        if row is None:
            return "not run", ""
        run_pk, run_id, state = row
        failed = [
            task_id
            for (task_id,) in conn.execute(
                "SELECT DISTINCT task_id FROM task_instance WHERE dag_id = ? AND run_id = ? "
                "AND state NOT IN ('success', 'skipped')",
                (dag_id, run_id),
            )
        ]
        value = conn.execute(
            "SELECT value FROM xcom WHERE dag_run_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (run_pk,),
        ).fetchone()
    if failed:
        return str(state), "failed: " + ", ".join(failed)
    return str(state), short_text(value[0]) if value else ""


def short_text(raw: Any, width: int = 60) -> str:
    """A stored value as one line of compact JSON (or text), cut to ``width``."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(results: list[DagResult]) -> None:
    rows = [("DAG", "state", "seconds", "result")] + [
        (r.dag_id, r.state, f"{r.seconds:.1f}", r.summary) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dag_ids", nargs="*", help="run only these example DAGs (default: all)")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("NOXUS_DEMO_HOME", DEFAULT_HOME)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("NOXUS_DEMO_PORT", "8765")))
    args = parser.parse_args()
    # Ctrl-C raises KeyboardInterrupt (even when started in the background, where SIGINT starts ignored);
    # SIGTERM unwinds the same way, so every server started here is stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    dag_ids = args.dag_ids or sorted(path.stem for path in EXAMPLES.glob("noxus_*.py"))
    home: Path = args.home
    log_dir = home / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[DagResult] = []
    total = time.monotonic()
    with loopback_files(EXAMPLES / "data") as files, emulator(args.port, log_dir / "emulator.log") as url:
        env = airflow_env(home, url)
        migrate_once(home, env)
        print(
            f"Emulator at {url} (key {DEMO_KEY}); running {len(dag_ids)} example DAGs side by side, "
            f"logs in {log_dir}",
            flush=True,
        )
        dags_started = time.monotonic()
        ended = run_dags(dag_ids, env, files, home, log_dir)
        dags_seconds = time.monotonic() - dags_started
        for dag_id in dag_ids:
            state, summary = last_run_result(home / "runs" / f"{dag_id}.db", dag_id)
            if dag_id not in ended:
                state, summary = "no result", f"its dags test never ended: see {log_dir / 'runner.log'}"
                results.append(DagResult(dag_id, state, dags_seconds, summary))
                continue
            seconds, timed_out = ended[dag_id]
            if timed_out:
                state, summary = "timed out", f"still {state} after {seconds:.0f} s"
            results.append(DagResult(dag_id, state, seconds, summary))
        webhooks = len(files.webhooks)
    print()
    print_table(results)
    failed = [r.dag_id for r in results if r.state != "success"]
    print(
        f"\n{len(results) - len(failed)}/{len(results)} DAGs succeeded; the DAGs took {dags_seconds:.1f} s "
        f"(side by side), the demo {time.monotonic() - total:.1f} s in all; {webhooks} webhook(s) received; "
        f"logs in {log_dir}"
    )
    if failed:
        print(f"FAILED: {', '.join(failed)} (see their logs)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
