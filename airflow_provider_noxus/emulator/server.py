"""Running the emulator: in-process on a free port (:class:`EmulatorServer`) and its control client."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from airflow_provider_noxus.emulator.app import ADMIN_HEADER, DEFAULT_ADMIN_TOKEN, Emulator, EmulatorSettings
from airflow_provider_noxus.emulator.faults import Fault
from airflow_provider_noxus.emulator.workflows import Workflow, load_workflows_file

STARTUP_TIMEOUT = 30.0
#: Seconds requests still being answered (e.g. held sync creates) get when the emulator stops.
SHUTDOWN_TIMEOUT = 2.0


async def start_emulator(settings: EmulatorSettings, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving in the running loop; returns the runner (``cleanup()`` stops it) and the bound port.

    :param settings: how the emulator behaves.
    :param host: address to bind, e.g. ``127.0.0.1``.
    :param port: port to bind; 0 picks a free one.
    """
    emulator = Emulator(settings)
    runner = web.AppRunner(
        emulator.build_app(),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    server = runner.server
    if server is not None:
        emulator.connection_count = lambda: len(server.connections)
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound_port: int = runner.addresses[0][1]
    return runner, bound_port


class EmulatorControl:
    """A small synchronous client (stdlib urllib) for the ``/_emulator`` control API.

    :param url: the emulator's base URL.
    :param admin_token: its admin token.
    """

    def __init__(self, url: str, admin_token: str) -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self._workflow_ids: dict[str, str] | None = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header(ADMIN_HEADER, self.admin_token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RuntimeError(
                f"Emulator control {method} {path} failed: HTTP {error.code} {detail}"
            ) from None

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        status: int | None = None,
        count: int = 1,
        retry_after: float | str | None = None,
        seconds: float | None = None,
        after_frames: int | None = None,
        location: str | None = None,
        chunk_bytes: int | None = None,
        mode: str | None = None,
    ) -> None:
        """Queue a fault; its kinds and fields are described in :mod:`.faults`.

        :param endpoint: endpoint name (``get_run``, ``run_events``...) or ``*``.
        :param kind: status, redirect, latency, reset, malformed, trickle, lose_answer, drop_stream,
            silent_stream or sync_timeout.
        :param status: status of a ``status`` fault (default 503) or a ``redirect`` (default 307).
        :param count: how many matching requests it hits; -1 until cleared.
        :param retry_after: ``Retry-After`` of a ``status`` fault, sent verbatim (``"none"``: no header).
        :param seconds: latency of a ``latency`` fault, pause of a ``trickle``, hold of a ``lose_answer``
            timeout, keep-alive interval of a ``silent_stream``.
        :param after_frames: frames sent before a ``drop_stream`` fault closes the stream.
        :param location: ``Location`` of a ``redirect`` (``{path}``: the request's path and query).
        :param chunk_bytes: bytes a ``trickle`` sends at a time (default 1).
        :param mode: how a ``lose_answer`` loses it: timeout, timeout_close, truncate, cut_json or 502.
        """
        body = {
            "endpoint": endpoint,
            "kind": kind,
            "status": status,
            "count": count,
            "retry_after": retry_after,
            "seconds": seconds,
            "after_frames": after_frames,
            "location": location,
            "chunk_bytes": chunk_bytes,
            "mode": mode,
        }
        self._call("POST", "/_emulator/faults", {k: v for k, v in body.items() if v is not None})

    def clear_faults(self) -> None:
        """Forget every fault."""
        self._call("DELETE", "/_emulator/faults")

    def faults(self) -> list[dict[str, Any]]:
        """The pending faults."""
        faults: list[dict[str, Any]] = self._call("GET", "/_emulator/faults")["faults"]
        return faults

    def counters(self) -> dict[str, Any]:
        """The counters: requests per endpoint and status, runs, stops, connections, streams, webhooks."""
        counters: dict[str, Any] = self._call("GET", "/_emulator/counters")
        return counters

    def reset(self) -> None:
        """Forget runs, files, faults and counters (workflows and keys stay)."""
        self._call("POST", "/_emulator/reset")

    def run(self, run_id: str) -> dict[str, Any]:
        """Any workspace's run, with its output."""
        run: dict[str, Any] = self._call("GET", f"/_emulator/runs/{run_id}")
        return run

    def workflow_id(self, name: str) -> str:
        """The id of the workflow named ``name`` (``echo``, ``summarize``...)."""
        if self._workflow_ids is None or name not in self._workflow_ids:
            self._workflow_ids = self._call("GET", "/_emulator/workflows")
        if name not in self._workflow_ids:
            raise KeyError(f"No emulator workflow named {name!r}; known: {sorted(self._workflow_ids)}")
        return self._workflow_ids[name]


class EmulatorServer:
    """The emulator in a background thread with its own event loop; a context manager.

    :param port: port to bind; 0 (default) picks a free one.
    :param host: address to bind.
    :param api_keys: accepted API keys (one workspace each); default the demo key.
    :param admin_token: control API token.
    :param allow_loopback_urls: let file URLs and webhooks use loopback addresses.
    :param sync_hold_seconds: how long the sync create holds before a 504.
    :param feedback_delay: default pause of human-review nodes.
    :param keep_alive_seconds: idle time between SSE ``: keep-alive`` comments.
    :param workflows_file: a JSON/YAML file of extra workflows.
    :param workflows: extra workflows.
    :param faults: faults active from the start.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        api_keys: list[str] | None = None,
        admin_token: str = DEFAULT_ADMIN_TOKEN,
        allow_loopback_urls: bool = False,
        sync_hold_seconds: float = 120.0,
        feedback_delay: float = 1.0,
        keep_alive_seconds: float = 15.0,
        workflows_file: str | Path | None = None,
        workflows: list[Workflow] | None = None,
        faults: list[Fault] | None = None,
    ) -> None:
        extra = list(workflows or [])
        if workflows_file is not None:
            extra += load_workflows_file(workflows_file)
        self.settings = EmulatorSettings(
            api_keys=list(api_keys or []),
            admin_token=admin_token,
            allow_loopback_urls=allow_loopback_urls,
            sync_hold_seconds=sync_hold_seconds,
            feedback_delay=feedback_delay,
            keep_alive_seconds=keep_alive_seconds,
            workflows=extra,
            faults=list(faults or []),
        )
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://<host>:<port>``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The first API key."""
        return self.settings.effective_api_keys[0]

    @property
    def api_keys(self) -> list[str]:
        """Every accepted API key."""
        return self.settings.effective_api_keys

    @property
    def admin_token(self) -> str:
        """The control API token."""
        return self.settings.admin_token

    @property
    def control(self) -> EmulatorControl:
        """A client for the control API."""
        return EmulatorControl(self.url, self.admin_token)

    def start(self) -> EmulatorServer:
        """Start serving; returns when the port is bound."""
        self._thread = threading.Thread(target=self._serve, name="noxus-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(STARTUP_TIMEOUT):
            raise RuntimeError("The Noxus emulator did not start within 30 s")
        if self._startup_error is not None:
            raise RuntimeError(
                f"The Noxus emulator failed to start: {self._startup_error}"
            ) from self._startup_error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._runner, self.port = loop.run_until_complete(
                start_emulator(self.settings, self.host, self.port)
            )
        except BaseException as error:
            self._startup_error = error
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STARTUP_TIMEOUT)
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
