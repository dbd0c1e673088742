"""Fixtures of the emulator's own tests: one emulator with short timings, a client, a local web server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_provider_noxus.emulator import EmulatorServer
from emulator.helpers import KEY_A, KEY_B, Api, LocalWebServer


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    """An emulator with two workspaces, loopback URLs allowed and short timings."""
    with EmulatorServer(
        api_keys=[KEY_A, KEY_B],
        allow_loopback_urls=True,
        sync_hold_seconds=1.0,
        feedback_delay=0.3,
        keep_alive_seconds=0.2,
    ) as server:
        yield server


@pytest.fixture
def api(emu: EmulatorServer) -> Iterator[Api]:
    """A client as workspace A; the emulator is reset before the test."""
    emu.control.reset()
    with requests.Session() as session:
        session.headers["X-API-Key"] = KEY_A
        yield Api(emu, session)


@pytest.fixture
def web_server() -> Iterator[LocalWebServer]:
    """A :class:`LocalWebServer` running for the test."""
    state = LocalWebServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", "/file.txt")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.received.append(json.loads(self.rfile.read(length)))
            status = state.post_statuses.pop(0) if state.post_statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
